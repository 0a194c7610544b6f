"""Test-set negative ELBO (bits per dimension) of trained runs: LSGM diffusion prior vs N(0, I) prior.

    python benchmarks/elbo.py RUN [RUN ...] [--data-root DIR] [--limit N] [--draws K] [--ode N]

For each run, the mean over test images of ``-ELBO = rec - H(q) + CE`` in bits per image
dimension (8-bit pixels: ``nats / (D ln 2) + 8``), averaged over K Monte-Carlo draws of z0 and of
the diffusion time, with its standard error. The CE term of the diffusion prior is the
likelihood-weighted denoising bound (all constants included), so the numbers are true bounds.

``--ode N`` also estimates, on the first N test images, the same quantity with the latent's
cross-entropy replaced by the probability-flow ODE's ``-log p(z0)`` (Song et al. 2021, Hutchinson
trace estimator): ``rec - H(q) + E_q[-log p_ode(z0)]``, the bound LSGM reports with an ODE prior.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from ldcodec.checkpoint import load_model
from ldcodec.data import load_split, to_tensor


@torch.no_grad()
def test_elbo(run: str, data_root: str | None, limit: int | None, draws: int, ode: int = 0) -> dict:
    model, cfg, ckpt = load_model(run)
    x = to_tensor(load_split(cfg.data.dataset, "test", data_root, limit=limit)[0])
    per_image = torch.zeros(len(x))
    for k in range(draws):
        g = torch.Generator().manual_seed(1000 + k)
        for i in range(0, len(x), 500):
            per_image[i:i + 500] += model(x[i:i + 500], generator=g)["bpd"] / draws
    out = {"run": run, "checkpoint": str(ckpt), "cell": cfg.name, "prior": cfg.model.prior,
           "test_images": len(x), "draws": draws, "neg_elbo_bpd": per_image.mean().item(),
           "stderr": (per_image.std() / math.sqrt(len(x))).item()}
    if ode and model.prior is not None:
        out.update(ode_bound(model, x[:ode]))
    return out


@torch.no_grad()
def ode_bound(model, x: torch.Tensor) -> dict:
    """``rec - H(q) - log p_ode(z0)`` in bits/dim with one draw of ``z0 ~ q(z0|x)``."""
    from ldcodec.diffusion.likelihood import ode_nll

    g = torch.Generator().manual_seed(0)
    post = model.ae.encode(x)
    z0 = post.sample(g)
    nats = model.ae.recon_nll(x, model.ae.decode(z0)) - post.entropy() + ode_nll(model.prior, z0, generator=g)
    bpd = nats / (model.num_dims * math.log(2)) + math.log2(255)
    return {"ode_images": len(x), "neg_elbo_ode_bpd": bpd.mean().item(),
            "ode_stderr": (bpd.std() / math.sqrt(len(x))).item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--data-root")
    p.add_argument("--limit", type=int)
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--ode", type=int, default=0, help="images for the probability-flow ODE bound (0: skip)")
    a = p.parse_args()
    for run in a.runs:
        print(json.dumps(test_elbo(run, a.data_root, a.limit, a.draws, a.ode)), flush=True)


if __name__ == "__main__":
    main()
