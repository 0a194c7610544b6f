"""Test-set negative ELBO (bits per dimension) of trained runs: LSGM diffusion prior vs N(0, I) prior.

    python benchmarks/elbo.py RUN [RUN ...] [--data-root DIR] [--limit N] [--draws K] [--ode N] [--device D]

For each run, the mean over test images of ``-ELBO = rec - H(q) + CE`` in bits per image
dimension (8-bit pixels: ``nats / (D ln 2) + log2 255``, the model's ``bpd``), averaged over K Monte-Carlo draws of z0 and of
the diffusion time, with its standard error. The CE term of the diffusion prior is the
likelihood-weighted denoising bound (all constants included), so the numbers are true bounds.

``--ode N`` also estimates, on the first N test images, the same quantity with the latent's
cross-entropy replaced by the probability-flow ODE's ``-log p(z0)`` (Song et al. 2021, Hutchinson
trace estimator): ``rec - H(q) + E_q[-log p_ode(z0)]``, the bound LSGM reports with an ODE prior.

Both are computed by :func:`ldcodec.diffusion.likelihood.checkpoint_likelihood`, as in
``ldcodec likelihood RUN --limit N [--ode]``.
"""

from __future__ import annotations

import argparse
import json

from ldcodec.diffusion.likelihood import checkpoint_likelihood


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--data-root")
    p.add_argument("--limit", type=int)
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--ode", type=int, default=0, help="images for the probability-flow ODE bound (0: skip)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    for run in a.runs:
        print(json.dumps(checkpoint_likelihood(run, a.data_root, a.limit, a.draws, a.ode, a.device)), flush=True)


if __name__ == "__main__":
    main()
