"""Exact (ODE) log-likelihood of latents under the diffusion prior.

The probability-flow ODE ``dz/dt = v(z, t) = f z - g^2 score / 2`` (Song et al. 2021, Eq. 13)
is a continuous normalising flow, so (Chen et al. 2018, Thm. 1; Song et al. 2021, Sec. 4.3)

    log p_{t_min}(z0) = log p_1(z_1) + int_{t_min}^{1} div v(z_t, t) dt,

integrated jointly with ``z`` from ``z_{t_min} = z0`` to ``t = 1`` by scipy's adaptive RK45.
The divergence is exact (one backward pass per dimension; small latents) or Hutchinson's
unbiased estimate ``xi^T (dv/dz) xi`` with one Rademacher probe ``xi`` held fixed over the solve
(Grathwohl et al. 2019, FFJORD Eq. 7). ``t_min`` is the process's; at ``t_min`` the model's marginal
equals ``p(z0)`` up to the tiny noise ``sigma_{t_min}``.

A trained model's test-set bounds in bits per dimension, the negative ELBO and the same bound with
the ODE's ``-log p(z0)`` as the latent's cross-entropy, are :func:`checkpoint_likelihood`
(``ldcodec likelihood`` prints them, ``benchmarks/elbo.py`` writes them as JSON).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ldcodec.diffusion.prior import DiffusionPrior
from ldcodec.errors import LdcodecError
from ldcodec.tensors import sum_except_batch

Tensor = torch.Tensor


def _divergence(v: Tensor, z: Tensor, probe: Tensor | None) -> Tensor:
    """``div_z v`` per sample, ``(B,)``: Hutchinson with ``probe`` (like ``z``) or exact when None.

    Relies on the samples of the batch being independent (no batch norm in the denoiser).
    """
    if probe is not None:
        (jvp,) = torch.autograd.grad(v, z, probe)
        return sum_except_batch(jvp * probe)
    b = z.shape[0]
    flat_v = v.reshape(b, -1)
    diag = [
        torch.autograd.grad(flat_v[:, j].sum(), z, retain_graph=True)[0].reshape(b, -1)[:, j]
        for j in range(flat_v.shape[1])
    ]
    return torch.stack(diag, dim=1).sum(dim=1)


@torch.no_grad()
def ode_nll(
    prior: DiffusionPrior,
    z0: Tensor,
    cond: Tensor | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    hutchinson: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``-log p(z0)`` in nats, ``(B,)``, for latents ``z0`` of shape ``(B, d)`` or ``(B, C, h, w)``.

    ``hutchinson=False`` computes the exact trace (``d`` backward passes per evaluation).
    """
    process = prior.process
    shape, b = z0.shape, z0.shape[0]
    n = z0[0].numel()
    probe = None
    if hutchinson:
        probe = torch.randint(0, 2, shape, generator=generator, device=z0.device).to(z0.dtype) * 2.0 - 1.0

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        z = torch.from_numpy(y[: b * n]).to(dtype=z0.dtype, device=z0.device).reshape(shape)
        tt = torch.full((b,), t, dtype=z0.dtype, device=z0.device)
        with torch.enable_grad():
            z.requires_grad_(True)
            v = process.reverse_drift(z, tt, prior.eps(z, tt, cond), flow=True)
            div = _divergence(v, z, probe)
        out = torch.cat([v.detach().reshape(-1), div.detach()])
        return out.to(device="cpu", dtype=torch.float64).numpy()

    y0 = torch.cat([z0.reshape(-1), torch.zeros(b, dtype=z0.dtype, device=z0.device)])
    sol = solve_ivp(rhs, (process.t_min, 1.0), y0.to(device="cpu", dtype=torch.float64).numpy(),
                    rtol=rtol, atol=atol, t_eval=[1.0])
    if not sol.success:
        raise LdcodecError(f"likelihood ODE solver failed ({sol.message}); loosen rtol/atol")
    y1 = torch.from_numpy(sol.y[:, -1]).to(dtype=z0.dtype, device=z0.device)
    z1, log_det = y1[: b * n].reshape(shape), y1[b * n:]
    return -(process.prior_logp(z1) + log_det)


def bits_per_dim(nats: Tensor | float, num_dims: int) -> Tensor | float:
    """Convert nats (per sample) to bits per dimension: ``nats / (num_dims ln 2)``."""
    return nats / (num_dims * math.log(2.0))


# -- a trained model's test-set bounds (``ldcodec likelihood`` and ``benchmarks/elbo.py``) ---------

LOG2_255 = math.log2(255.0)  # as the model's ``bpd``: pixels k/255, a density on [0, 1] times bins 1/255


@torch.no_grad()
def neg_elbo_bpd(model, x: Tensor, draws: int = 4, batch: int = 500) -> Tensor:
    """Per image ``(N,)``, on the CPU: the model's ``-ELBO = rec - H(q) + CE (+ R(y) in mode C)`` in
    bits per dimension (its ``bpd``), averaged over ``draws`` Monte-Carlo draws of ``z0`` and of the
    diffusion time (draw ``k`` seeded ``1000 + k``). ``x``: ``(N, C, H, W)`` in [0, 1], any device."""
    device = next(model.parameters()).device
    per_image = torch.zeros(len(x))
    for k in range(draws):
        g = torch.Generator(device).manual_seed(1000 + k)
        for i in range(0, len(x), batch):
            per_image[i:i + batch] += model(x[i:i + batch].to(device), generator=g)["bpd"].cpu() / draws
    return per_image


@torch.no_grad()
def ode_bound_bpd(model, x: Tensor, seed: int = 0) -> Tensor:
    """Per image ``(N,)``, on the CPU: ``rec - H(q) - log p_ode(z0) (+ R(y) in mode C)`` in bits per
    dimension with one draw of ``z0 ~ q(z0|x)``: the ELBO with the latent's cross-entropy replaced by
    the probability-flow ODE's ``-log p(z0)`` (Hutchinson trace, :func:`ode_nll`), the bound LSGM
    reports with an ODE prior. Needs a diffusion prior."""
    if model.prior is None:
        raise LdcodecError("the ODE bound needs a diffusion prior; this model's prior is N(0, I)")
    device = next(model.parameters()).device
    x = x.to(device)
    g = torch.Generator(device).manual_seed(seed)
    post = model.ae.encode(x)
    z0 = post.sample(g)
    cond, rate = None, torch.zeros(len(x), device=device)
    if model.cfg.cond.enabled:  # as the model's ELBO: the prior given the rounded code, plus its rate
        cond = torch.round(model.code(post.mean))
        rate = model.code_density.bits(cond) * math.log(2.0)
    nats = (model.ae.recon_nll(x, model.ae.decode(z0)) - post.entropy() + rate
            + ode_nll(model.prior, z0, cond=cond, generator=g))
    return (bits_per_dim(nats, model.num_dims) + LOG2_255).cpu()


def _mean_stderr(v: Tensor) -> tuple[float, float]:
    return v.mean().item(), (v.std() / math.sqrt(len(v))).item() if len(v) > 1 else float("nan")


def checkpoint_likelihood(checkpoint: str, data_root=None, limit: int | None = None, draws: int = 4,
                          ode: int = 0, device: str = "cpu") -> dict:
    """A checkpoint's bounds on the first ``limit`` test images of its dataset (all without a limit):
    ``neg_elbo_bpd`` and its ``stderr`` (:func:`neg_elbo_bpd`), and with ``ode`` > 0 and a diffusion
    prior, ``neg_elbo_ode_bpd`` and ``ode_stderr`` on the first ``ode`` of them (:func:`ode_bound_bpd`)."""
    from ldcodec.checkpoint import load_model
    from ldcodec.data import load_split, to_tensor

    model, cfg, ckpt = load_model(checkpoint, device=device)
    x = to_tensor(load_split(cfg.data.dataset, "test", data_root, limit=limit)[0])
    mean, stderr = _mean_stderr(neg_elbo_bpd(model, x, draws))
    out = {"run": str(checkpoint), "checkpoint": str(ckpt), "cell": cfg.name, "prior": cfg.model.prior,
           "latent": cfg.model.latent, "mode": "C" if cfg.cond.enabled else "U", "test_images": len(x),
           "draws": draws, "neg_elbo_bpd": mean, "stderr": stderr}
    if ode and model.prior is not None:
        mean, stderr = _mean_stderr(ode_bound_bpd(model, x[:ode]))
        out.update(ode_images=len(x[:ode]), neg_elbo_ode_bpd=mean, ode_stderr=stderr)
    return out
