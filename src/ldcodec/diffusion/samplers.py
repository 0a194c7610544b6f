"""Reverse-process samplers with one signature (k-diffusion style) for every process and model.

``sample(prior, z_t, t_start, method=..., steps=...)`` starts from a given ``z_t`` at a given
``t_start`` (a float or a ``(B,)`` tensor: compression decodes from the middle of the chain),
runs the chosen reverse process down to ``t_end`` (default ``process.t_min``) and returns the
denoised mean ``E[z0 | z_{t_end}]``, shaped like ``z_t`` (``(B, d)`` or ``(B, C, h, w)``).

Methods (registry ``SAMPLERS``):

============== ===================================================================================
euler_maruyama reverse SDE ``dz = [f z - g^2 score] dt + g dW`` (Song et al. 2021, Eq. 6)
pc             predictor-corrector: ``n_corrector`` Langevin steps with signal-to-noise ``snr``, then
               an Euler-Maruyama predictor (Song et al. 2021, Sec. 4.2)
ode            probability-flow ODE ``dz/dt = f z - g^2 score / 2`` (Song et al. 2021, Eq. 13) with
               scipy's adaptive ``solve_ivp`` (RK45 by default, ``rtol``/``atol``)
ancestral      ``z_s ~ q(z_s | z_t, z0 = E[z0|z_t])`` (Ho et al. 2020, Alg. 2, posterior variance)
ddim           ``z_s = alpha_s z0 + sqrt(sigma_s^2 - c^2) eps + c xi``, ``c^2 = eta^2 Var q(z_s|z_t,z0)``
               (Song, Meng & Ermon 2021, Eq. 12 and 16); ``eta=0`` is deterministic
============== ===================================================================================

Grid methods step over ``steps`` equal intervals of ``[t_end, t_start]``; for the discrete DDPM
process the interior points are snapped to ``t = i / N`` (so ``t_start=1, steps=N-1`` is the full
DDPM chain, fewer steps a DDIM-style subset). Symbols: ``z`` = z_t, ``eps`` = eps_theta(z_t, t),
``z0`` = E[z0 | z_t] = (z - sigma_t eps) / alpha_t, ``xi`` ~ N(0, I).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ldcodec.diffusion.prior import DiffusionPrior
from ldcodec.diffusion.processes import NoiseProcess
from ldcodec.errors import LdcodecError
from ldcodec.tensors import bcast

Tensor = torch.Tensor
EpsFn = Callable[[Tensor, Tensor], Tensor]


def _batch_t(t: Tensor | float, z: Tensor) -> Tensor:
    """A float or ``(B,)`` time as a ``(B,)`` tensor in ``z``'s dtype and device."""
    t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
    return t.expand(z.shape[0]).clone() if t.dim() == 0 else t


def _eps_fn(prior: DiffusionPrior, cond: Tensor | None, guidance: float) -> EpsFn:
    """``(z_t, t) -> eps_theta``, classifier-free guided when ``guidance != 0``."""
    if guidance == 0.0:
        return lambda z, t: prior.eps(z, t, cond)
    return lambda z, t: prior.eps_guided(z, t, cond, guidance)


def _noise(z: Tensor, generator: torch.Generator | Sequence[torch.Generator] | None) -> Tensor:
    """Standard normal noise like ``z``, drawn on the generator's device (a CPU generator gives the
    same noise whatever device ``z`` is on: decoders stay reproducible across devices).

    A sequence of ``B`` generators draws each sample's noise from its own generator, so a sample's
    noise does not depend on which other samples share its batch.
    """
    if isinstance(generator, Sequence):
        rows = [torch.randn(z.shape[1:], generator=g, device=g.device, dtype=z.dtype) for g in generator]
        return torch.stack(rows).to(z.device)
    device = generator.device if generator is not None else z.device
    return torch.randn(z.shape, generator=generator, device=device, dtype=z.dtype).to(z.device)


def time_grid(process: NoiseProcess, t_start: Tensor, t_end: Tensor, steps: int) -> Tensor:
    """``(steps + 1, B)`` non-increasing times from ``t_start`` to ``t_end`` (``(B,)`` each).

    Equal spacing; for a discrete process the interior points are snapped to ``i / N``. More steps
    than grid points between the ends give zero-length steps: they cost a network call and do not
    move ``z`` (except for pc's corrector).
    """
    frac = torch.linspace(0.0, 1.0, steps + 1, dtype=t_start.dtype, device=t_start.device)[:, None]
    grid = t_start[None] + frac * (t_end - t_start)[None]
    if not process.continuous:
        grid[1:-1] = torch.round(grid[1:-1] * process.N) / process.N
        grid = torch.cummin(grid, dim=0).values  # rounding must not make a step go up in time
    return grid


def denoise(prior: DiffusionPrior, z_t: Tensor, t: Tensor | float, cond: Tensor | None = None,
            guidance: float = 0.0) -> Tensor:
    """``E[z0 | z_t] = (z_t - sigma_t eps_theta) / alpha_t`` (Tweedie), shaped like ``z_t``: the "mse" decode."""
    t = _batch_t(t, z_t)
    return prior.process.eps_to_z0(z_t, t, _eps_fn(prior, cond, guidance)(z_t, t))


def _em_step(eps_fn: EpsFn, process: NoiseProcess, z: Tensor, t: Tensor, s: Tensor,
             generator: torch.Generator | None) -> Tensor:
    """One Euler-Maruyama step of the reverse SDE from ``t`` down to ``s``."""
    dt = t - s
    drift = process.reverse_drift(z, t, eps_fn(z, t))
    _, g = process.drift_diffusion(z, t)
    return z - bcast(dt, z) * drift + bcast(g * dt.sqrt(), z) * _noise(z, generator)


def _euler_maruyama(eps_fn: EpsFn, process: NoiseProcess, z: Tensor, grid: Tensor,
                    generator: torch.Generator | None) -> Tensor:
    for t, s in zip(grid[:-1], grid[1:]):
        z = _em_step(eps_fn, process, z, t, s, generator)
    return z


def _langevin(eps_fn: EpsFn, process: NoiseProcess, z: Tensor, t: Tensor, snr: float,
              generator: torch.Generator | None) -> Tensor:
    """One Langevin corrector step at time ``t`` (Song et al. 2021, Sec. 4.2).

    score_sde sets the step ``2 (snr ||xi|| / ||score||)^2`` from batch-averaged norms; that couples
    the samples of a batch (a decode would depend on its batch-mates) and, per sample, blows up in
    low dimension where ``||score||`` can be near 0. We evaluate the rule at its high-dimensional
    value for the ``N(0, I)`` reference latent, ``||xi||^2 ~ d`` and ``||score||^2 ~ d / (alpha_t^2 +
    sigma_t^2)``: ``step = 2 snr^2 (alpha_t^2 + sigma_t^2)``, per sample and batch-independent.
    """
    score = process.eps_to_score(z, t, eps_fn(z, t))
    alpha, sigma = process.alpha_sigma(t)
    step = 2.0 * snr**2 * (alpha.square() + sigma.square())
    return z + bcast(step, z) * score + bcast((2.0 * step).sqrt(), z) * _noise(z, generator)


def _pc(eps_fn: EpsFn, process: NoiseProcess, z: Tensor, grid: Tensor, generator: torch.Generator | None,
        *, snr: float = 0.16, n_corrector: int = 1) -> Tensor:
    for t, s in zip(grid[:-1], grid[1:]):
        for _ in range(n_corrector):
            z = _langevin(eps_fn, process, z, t, snr, generator)
        z = _em_step(eps_fn, process, z, t, s, generator)
    return z


def _ancestral(eps_fn: EpsFn, process: NoiseProcess, z: Tensor, grid: Tensor,
               generator: torch.Generator | None) -> Tensor:
    for t, s in zip(grid[:-1], grid[1:]):
        z0 = process.eps_to_z0(z, t, eps_fn(z, t))
        mean, var = process.posterior(z, z0, t, s)
        z = mean + bcast(var.sqrt(), z) * _noise(z, generator)
    return z


def _ddim(eps_fn: EpsFn, process: NoiseProcess, z: Tensor, grid: Tensor, generator: torch.Generator | None,
          *, eta: float = 0.0) -> Tensor:
    if not 0.0 <= eta <= 1.0:
        raise LdcodecError(f"DDIM eta must lie in [0, 1], got {eta}")
    for t, s in zip(grid[:-1], grid[1:]):
        eps = eps_fn(z, t)
        z0 = process.eps_to_z0(z, t, eps)
        _, var = process.posterior(z, z0, t, s)
        c2 = eta**2 * var
        alpha_s, sigma_s = process.alpha_sigma(s)
        z = bcast(alpha_s, z) * z0 + bcast((sigma_s.square() - c2).clamp_min(0.0).sqrt(), z) * eps
        if eta > 0.0:
            z = z + bcast(c2.sqrt(), z) * _noise(z, generator)
    return z


def _ode(eps_fn: EpsFn, process: NoiseProcess, z: Tensor, grid: Tensor, generator: torch.Generator | None,
         *, rtol: float = 1e-5, atol: float = 1e-5, solver: str = "RK45") -> Tensor:
    """Probability-flow ODE from ``grid[0]`` to ``grid[-1]`` (other grid points unused; no randomness).

    Per-sample start times are handled by integrating in ``tau`` in [0, 1] with
    ``t_b(tau) = t_start_b + tau (t_end_b - t_start_b)``, so one adaptive solve covers the batch.
    """
    t0, span = grid[0], grid[-1] - grid[0]

    def rhs(tau: float, y: np.ndarray) -> np.ndarray:
        zt = torch.from_numpy(y).to(dtype=z.dtype, device=z.device).reshape(z.shape)
        t = t0 + tau * span
        v = process.reverse_drift(zt, t, eps_fn(zt, t), flow=True) * bcast(span, zt)
        return v.reshape(-1).to(device="cpu", dtype=torch.float64).numpy()

    y0 = z.reshape(-1).to(device="cpu", dtype=torch.float64).numpy()
    sol = solve_ivp(rhs, (0.0, 1.0), y0, method=solver, rtol=rtol, atol=atol, t_eval=[1.0])
    if not sol.success:
        raise LdcodecError(f"probability-flow ODE solver failed ({sol.message}); loosen rtol/atol or try solver='RK23'")
    return torch.from_numpy(sol.y[:, -1]).to(dtype=z.dtype, device=z.device).reshape(z.shape)


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler_maruyama": _euler_maruyama,
    "pc": _pc,
    "ode": _ode,
    "ancestral": _ancestral,
    "ddim": _ddim,
}
_ADAPTIVE = frozenset({"ode"})


def _check_opts(method: str, opts: dict) -> None:
    allowed = [p.name for p in inspect.signature(SAMPLERS[method]).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise LdcodecError(f"sampler {method!r} has no option(s) {', '.join(unknown)}; "
                           f"valid options: {', '.join(allowed) or 'none'}")


@torch.no_grad()
def sample(
    prior: DiffusionPrior,
    z_t: Tensor,
    t_start: Tensor | float,
    *,
    method: str,
    steps: int | None = None,
    t_end: Tensor | float | None = None,
    cond: Tensor | None = None,
    guidance: float = 0.0,
    generator: torch.Generator | None = None,
    **opts,
) -> Tensor:
    """Run the reverse process from ``z_t`` at ``t_start`` to ``t_end`` and return ``E[z0 | z_{t_end}]``.

    ``steps``: number of grid intervals (one network call each, plus one for the final denoise;
    ignored by the adaptive ``ode``). ``guidance``: classifier-free guidance scale ``w`` (needs
    ``cond``). ``opts``: ``snr``, ``n_corrector`` (pc); ``eta`` (ddim); ``rtol``, ``atol``,
    ``solver`` (ode). Returns a tensor shaped like ``z_t``.
    """
    if method not in SAMPLERS:
        raise LdcodecError(f"unknown sampler {method!r}; valid names: {', '.join(sorted(SAMPLERS))}")
    _check_opts(method, opts)
    if method not in _ADAPTIVE and (steps is None or steps < 1):
        raise LdcodecError(f"sampler {method!r} needs steps >= 1, got {steps}")
    process = prior.process
    t_start = _batch_t(t_start, z_t)
    t_end = _batch_t(process.t_min if t_end is None else t_end, z_t)
    if bool((t_end > t_start).any()) or bool((t_end < 0).any()) or bool((t_start > 1).any()):
        raise LdcodecError("sampling needs 0 <= t_end <= t_start <= 1 for every sample")
    grid = time_grid(process, t_start, t_end, 1 if method in _ADAPTIVE else steps)
    z = SAMPLERS[method](_eps_fn(prior, cond, guidance), process, z_t, grid, generator, **opts)
    return denoise(prior, z, t_end, cond, guidance)
