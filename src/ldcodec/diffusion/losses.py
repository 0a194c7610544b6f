"""Denoising cross-entropy ``CE(q(z0|x) || p(z0))`` of the latent diffusion prior, with its bound.

For one latent ``z0`` (shape ``(B, *latent_shape)``) the variational bound (VDM, Kingma et al.
2021, Eq. 11) is, in nats,

    -log p(z0) <= KL(q(z_1|z0) || p(z_1))                       prior term
                 + E_t[ w(t)/2 ||eps - eps_theta(z_t, t)||^2 ]   diffusion term (LSGM Eq. 6-8)
                 + E[-log p(z0 | z_tmin)]                        reconstruction term

- continuous processes: the diffusion term is VDM Eq. 17, ``1/2 int w(t) E||eps - eps_theta||^2 dt``
  with ``w = -d lambda/dt`` over ``[t_min, 1]``.
- ``DiscreteVP``: Ho et al. 2020 Eq. 5 / VDM Eq. 13, the sum over steps ``i = 2..N`` of
  ``1/2 (SNR(i-1)/SNR(i) - 1) E||eps - eps_theta(z_i, i)||^2`` (the KL of each step with the
  reverse variance set to the posterior one), estimated from one step per sample.
- ``importance`` picks the proposal of ``t`` (or ``i``); every choice is unbiased.
  ``"log_snr"``: ``lambda`` uniform, so ``w / r`` is the constant ``lambda_max - lambda_min``
  (discrete: ``q_i ∝ lambda_{i-1} - lambda_i``). ``"normal"``: ``r ∝ w(t) Var(eps | z_t)`` for
  ``N(0, I)`` data, i.e. ``softplus(lambda)`` uniform (for VP: ``log sigma_t^2`` uniform, the
  importance sampling LSGM uses with likelihood weighting; discrete: ``q_i ∝ c_i sigmoid(lambda_i)``);
  1.5-2x lower standard deviation for near-normal latents. ``"uniform"``: ``t ~ U[t_min, 1]``
  (or ``i`` uniform), high variance.
- the reconstruction decoder is ``p(z0 | z_tmin) = N(z_tmin / alpha, (sigma/alpha)^2 I)`` at
  ``t_min`` (step 1 for DDPM), as VDM's decoder; its expected cost is the closed form
  ``d/2 (log(2 pi) + 1 - lambda_max)``.

So ``E[log p(x|z0)] + H(q(z0|x)) - bound`` is a true ELBO. ``weighting="unweighted"`` trains with the
DDPM "simple" loss ``||eps - eps_theta||^2`` (``t`` uniform) while ``bound`` stays the true bound,
estimated from a second, independent draw.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ldcodec.diffusion.prior import DiffusionPrior
from ldcodec.diffusion.processes import DiscreteVP, NoiseProcess
from ldcodec.errors import LdcodecError
from ldcodec.tensors import sum_except_batch

Tensor = torch.Tensor

WEIGHTINGS = ("likelihood", "unweighted")
IMPORTANCE = ("log_snr", "normal", "uniform")


def _log_snr_range(process: NoiseProcess, like: Tensor) -> tuple[Tensor, Tensor]:
    """``(lambda(1), lambda(t_min))`` as 0-d tensors in ``like``'s dtype and device."""
    ends = torch.tensor([1.0, process.t_min], dtype=torch.float64)
    lam = process.log_snr(ends).to(dtype=like.dtype, device=like.device)
    return lam[0], lam[1]


def _inverse_softplus(u: Tensor) -> Tensor:
    """``log(exp(u) - 1)`` for ``u > 0``."""
    return u + torch.log(-torch.expm1(-u))


def _draw_continuous(process: NoiseProcess, z0: Tensor, importance: str,
                     generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Times ``(B,)`` and weights ``w(t) / r(t)`` ``(B,)`` for ``t`` in ``[t_min, 1]``."""
    b = z0.shape[0]
    u = torch.rand(b, generator=generator, device=z0.device, dtype=z0.dtype)
    if importance == "uniform":
        t = process.t_min + (1.0 - process.t_min) * u
        return t, (1.0 - process.t_min) * process.likelihood_weight(t)
    lam_min, lam_max = _log_snr_range(process, z0)
    if importance == "log_snr":
        lam = lam_min + (lam_max - lam_min) * u
        weight = (lam_max - lam_min).expand(b)
    else:  # "normal": r(lambda) ∝ sigmoid(lambda), i.e. softplus(lambda) uniform
        sp_min, sp_max = F.softplus(lam_min), F.softplus(lam_max)
        lam = _inverse_softplus(sp_min + (sp_max - sp_min) * u)
        weight = (sp_max - sp_min) / torch.sigmoid(lam)
    return process.t_from_log_snr(lam).clamp(process.t_min, 1.0), weight


def _draw_discrete(process: DiscreteVP, z0: Tensor, importance: str,
                   generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Steps ``i`` in ``2..N`` as ``t = i / N`` ``(B,)`` and weights ``c_i / q_i`` ``(B,)``."""
    lam = process.grid_log_snr(dtype=torch.float64, device=z0.device)
    c = torch.expm1(lam[1:-1] - lam[2:])  # c_i = SNR(i-1)/SNR(i) - 1, i = 2..N
    proposal = {
        "uniform": torch.ones_like(c),
        "log_snr": lam[1:-1] - lam[2:],
        "normal": c * torch.sigmoid(lam[2:]),
    }[importance]
    proposal = proposal / proposal.sum()
    idx = torch.multinomial(proposal, z0.shape[0], replacement=True, generator=generator)
    weight = (c / proposal)[idx].to(z0.dtype)
    return (idx + 2).to(z0.dtype) / process.N, weight


def _noise_error(
    prior: DiffusionPrior, z0: Tensor, t: Tensor, cond: Tensor | None, drop: Tensor | None,
    generator: torch.Generator | None,
) -> Tensor:
    """``||eps - eps_theta(z_t, t)||^2`` with ``z_t ~ q(z_t | z0)``, ``(B,)``."""
    eps = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    z_t = prior.process.marginal(z0, t, eps)
    return sum_except_batch((eps - prior.eps(z_t, t, cond, drop)).square())


def reconstruction_nll(process: NoiseProcess, z0: Tensor) -> Tensor:
    """Expected ``-log p(z0 | z_tmin)`` in nats, ``(B,)``: ``d/2 (log 2 pi + 1 - lambda(t_min))``."""
    _, lam_max = _log_snr_range(process, z0)
    dims = z0[0].numel()
    return (0.5 * dims * (math.log(2.0 * math.pi) + 1.0 - lam_max)).expand(z0.shape[0])


def _simple_times(process: NoiseProcess, z0: Tensor, generator: torch.Generator | None) -> Tensor:
    """``t ~ U[t_min, 1]``, or ``i ~ U{1..N}`` as ``t = i / N`` for DDPM (Ho et al. 2020, Alg. 1)."""
    b = z0.shape[0]
    if not process.continuous:
        idx = torch.randint(1, process.N + 1, (b,), generator=generator, device=z0.device)
        return idx.to(z0.dtype) / process.N
    u = torch.rand(b, generator=generator, device=z0.device, dtype=z0.dtype)
    return process.t_min + (1.0 - process.t_min) * u


def cross_entropy(
    prior: DiffusionPrior,
    z0: Tensor,
    cond: Tensor | None = None,
    drop: Tensor | None = None,
    weighting: str = "likelihood",
    generator: torch.Generator | None = None,
    importance: str = "log_snr",
) -> dict[str, Tensor]:
    """Monte-Carlo cross-entropy of latents ``z0`` ``(B, *latent_shape)`` under the prior.

    Returns ``(B,)`` tensors: ``loss`` (to backprop; nats for ``"likelihood"``, where it equals
    ``bound``), ``bound`` (an unbiased estimate of an upper bound on ``-log p(z0)``, nats, all
    constants included) and its parts ``diffusion``, ``prior_kl``, ``reconstruction``.
    """
    if weighting not in WEIGHTINGS:
        raise LdcodecError(f"unknown weighting {weighting!r}; valid names: {', '.join(WEIGHTINGS)}")
    if importance not in IMPORTANCE:
        raise LdcodecError(f"unknown importance sampling {importance!r}; valid names: {', '.join(IMPORTANCE)}")
    process = prior.process
    draw = _draw_continuous if process.continuous else _draw_discrete
    t, weight = draw(process, z0, importance, generator)
    diffusion = 0.5 * weight * _noise_error(prior, z0, t, cond, drop, generator)
    prior_kl = process.prior_kl(z0)
    recon = reconstruction_nll(process, z0)
    bound = diffusion + prior_kl + recon
    if weighting == "likelihood":
        loss = bound
    else:
        loss = _noise_error(prior, z0, _simple_times(process, z0, generator), cond, drop, generator)
    return {"loss": loss, "bound": bound, "diffusion": diffusion, "prior_kl": prior_kl, "reconstruction": recon}
