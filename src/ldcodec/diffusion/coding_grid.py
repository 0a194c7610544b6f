"""Where mode U's coding steps go and what each costs: per-model tables, integer plans.

DiffC (Theis et al. 2022) sends ``z_t`` as a chain of reverse steps ``z_u -> z_s`` (``u > s``).
Format 2 gives every step the reverse density with the right variance and places the steps where
the information is. Both need one statistic of the model, per latent dim ``i`` and noise level:

    v_i(lambda) = E || z0_i - E_theta[z0_i | z_lambda] ||^2          (the denoiser's MSE)

estimated once from training latents (or in closed form for the exact Gaussian source).

*Reverse step* (Analytic-DPM, Bao et al. 2022, Thm 1, with the per-dim MSE): the forward posterior
is ``q(z_s | z_u, z0) = N(a z_u + c z0, s^2 I)`` (:meth:`NoiseProcess.posterior`), and the coding
density is ``p(z_s | z_u) = N(a z_u + c z0_hat, diag(s^2 + c^2 v_i(lambda_u)))``. Its expected KL
per dim is ``1/2 log(1 + r_i)`` with ``r_i = (SNR_s - SNR_u) v_i(lambda_u)`` (VDM Eq. 13 gives the
identity ``c^2 / s^2 = SNR_s - SNR_u``); the posterior-variance reverse step of format 1 paid
``r_i / 2``. For the exact Gaussian source ``v_i = var_i / (1 + SNR var_i)`` and the sum over any
chain telescopes to ``I(X; Z_t) = sum_i 1/2 log(1 + SNR_t var_i)``: the coded chain is exact.

*Levels.* Times are restricted to ``LEVELS + 1`` levels ``t_0 = 1 > t_1 > ... > t_L``, equally
spaced in log-SNR down to ``t_L = max(t_min, T_LOW)`` (snapped to ``i / N`` for the discrete
DDPM process). A stream names its stop time by its level (one byte).

*Integer plans.* ``bits[l, i]`` (int64, units of ``2^-FRAC_BITS`` bits) is the expected
information of dim ``i`` from level 0 to level ``l``, the sum of ``1/2 log2(1 + r_i)`` over the
fine levels (the continuous ideal). A coded step ``a -> b`` is predicted to cost its expected KL,
``sum_i 1/2 log2(1 + (SNR_b - SNR_a) v_i(a))``, plus a chunk overhead; the coding grid is the chain
of levels with the least predicted cost, found by dynamic programming over the levels
(:meth:`CodingTables.grid`). For a learned prior this matters most near ``t = 1``: there the
denoiser's error falls by an order of magnitude within a short stretch of log-SNR, so the
information is small but a coarse step, which pays for the error at its start, is not (measured on
a 196-dim MNIST latent, t = 0.2: one step over t in [0.54, 1] cost 126 bits of the chain's 186,
against 63 bits of ideal information in all; the optimal chain costs 71). Everything the decoder
must agree on exactly (the grid and each step's chunk plan) is integer arithmetic, so encoder and
decoder agree on every machine; the floating-point tables (``snr``, ``t``, ``v``) only set the
Gaussian densities and, through :func:`fixed_log2`, the integers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ldcodec.diffusion.processes import NoiseProcess
from ldcodec.errors import LdcodecError

LEVELS = 128  # levels 0..LEVELS (the header's stop level is one byte)
T_LOW = 1e-3  # the smallest coding time, when the process allows it
FRAC_BITS = 10  # bits tables in units of 2^-10 bits
ESTIMATE_STRIDE = 4  # the denoiser's MSE is measured at every 4th level and interpolated
FORBIDDEN = np.int64(1) << 60  # the cost of a step the plan may not take


def level_times(process: NoiseProcess) -> np.ndarray:
    """``(LEVELS + 1,)`` float64 times, decreasing from 1, equally spaced in log-SNR."""
    ends = torch.tensor([1.0, max(process.t_min, T_LOW)], dtype=torch.float64)
    lo, hi = process.log_snr(ends).tolist()
    t = process.t_from_log_snr(torch.linspace(lo, hi, LEVELS + 1, dtype=torch.float64)).clamp(process.t_min, 1.0)
    t[0] = 1.0
    if not process.continuous:
        t = torch.round(t * process.N).clamp(min=1) / process.N
        t = torch.cummin(t, 0).values
    return t.numpy()


@dataclass(frozen=True)
class StepCost:
    """How a channel simulator prices one coding step, for the grid's dynamic programme.

    ``per_step`` maps the per-dim expected bits of ``n`` candidate steps, ``(n, d)`` int64 in
    ``2^-FRAC_BITS`` bits, to their predicted costs ``(n,)`` int64 (integers only);
    ``max_dim_bits`` bounds one dim's bits in a step of more than one fine level; ``name`` keys the
    tables' cache of step costs (one per simulator and budget).
    """

    name: str
    max_dim_bits: int
    per_step: Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CodingTables:
    """Per-model statistics of the mode U chain.

    Attributes:
        t: ``(L+1,)`` float64 level times, decreasing from 1.
        snr: ``(L+1,)`` float64 ``alpha_t^2 / sigma_t^2`` at the levels.
        mse: ``(L+1, d)`` float64 ``v_i`` at the levels (flattened latent dims).
        bits: ``(L+1, d)`` int64 cumulative expected bits per dim (``2^-FRAC_BITS`` units).
    """

    t: np.ndarray
    snr: np.ndarray
    mse: np.ndarray
    bits: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "_costs", {})  # step_costs per budget, computed on first use

    @classmethod
    def from_mse(cls, process: NoiseProcess, t: np.ndarray, mse: np.ndarray) -> CodingTables:
        """Build the integer table from level times and the per-dim denoiser MSE ``(L+1, d)``."""
        tt = torch.as_tensor(t, dtype=torch.float64)
        snr = torch.exp(process.log_snr(tt)).numpy()
        mse = np.maximum(np.asarray(mse, dtype=np.float64), 0.0)
        gain = np.diff(snr)[:, None] * mse[:-1]  # r_i of each fine step
        step = fixed_log2(1.0 + gain) // 2  # not np.log2, whose last bits vary with numpy's build
        bits = np.concatenate([np.zeros((1, mse.shape[1]), np.int64), np.cumsum(step, 0)])
        return cls(np.asarray(t, np.float64), snr, mse, bits)

    @classmethod
    def gaussian(cls, process: NoiseProcess, variances: np.ndarray) -> CodingTables:
        """Closed form for data ``N(0, diag(variances))``: ``v_i = var_i / (1 + SNR var_i)``."""
        t = level_times(process)
        snr = torch.exp(process.log_snr(torch.as_tensor(t))).numpy()
        var = np.asarray(variances, np.float64).reshape(1, -1)
        return cls.from_mse(process, t, var / (1.0 + snr[:, None] * var))

    @classmethod
    @torch.no_grad()
    def estimate(cls, prior, latents: torch.Tensor, seed: int = 0, batch: int = 512,
                 stride: int = ESTIMATE_STRIDE) -> CodingTables:
        """Estimate ``v_i`` from training latents ``(n, *latent_shape)``: measured at every
        ``stride``-th level and the last (one noise draw per latent and level, from a seeded CPU
        generator), ``log v`` interpolated linearly in log-SNR between them (the levels are equally
        spaced in it). The tables are computed once and stored, so encoder and decoder share them."""
        from ldcodec.diffusion.samplers import denoise

        process = prior.process
        t = level_times(process)
        measured = sorted(set(range(0, LEVELS + 1, stride)) | {LEVELS})
        g = torch.Generator().manual_seed(seed)
        device = next(prior.parameters(), torch.zeros(())).device
        rows = []
        for level in measured:
            err = 0.0
            for i in range(0, len(latents), batch):
                z0 = latents[i:i + batch].to(device, torch.float32)
                tb = torch.full((len(z0),), float(t[level]), device=device)
                eps = torch.randn(z0.shape, generator=g).to(device)
                z0_hat = denoise(prior, process.marginal(z0, tb, eps), tb)
                err = err + (z0 - z0_hat).double().square().flatten(1).sum(0).cpu()
            rows.append((err / len(latents)).numpy())
        log_v = np.log(np.maximum(np.stack(rows), 1e-12))
        mse = np.exp(np.stack([np.interp(np.arange(LEVELS + 1), measured, col) for col in log_v.T], 1))
        return cls.from_mse(process, t, mse)

    # -- the state the checkpoint keeps ------------------------------------------------------
    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"t": torch.from_numpy(self.t), "snr": torch.from_numpy(self.snr),
                "mse": torch.from_numpy(self.mse), "bits": torch.from_numpy(self.bits)}

    @classmethod
    def from_tensors(cls, d: dict[str, torch.Tensor], dims: int) -> CodingTables:
        try:
            t, snr, mse, bits = (d[k].numpy() for k in ("t", "snr", "mse", "bits"))
        except KeyError as e:
            raise LdcodecError(f"coding tables lack {e}; rebuild them (delete the tables file)") from None
        if t.shape != (LEVELS + 1,) or mse.shape != (LEVELS + 1, dims) or bits.shape != mse.shape:
            raise LdcodecError(f"coding tables of shape {mse.shape} do not fit this model ({LEVELS + 1} levels x "
                               f"{dims} dims); rebuild them")
        return cls(t.astype(np.float64), snr.astype(np.float64), mse.astype(np.float64), bits.astype(np.int64))

    # -- planning (integers only) -------------------------------------------------------------
    @property
    def dims(self) -> int:
        return self.mse.shape[1]

    def expected_bits(self, level: int) -> float:
        """Expected information (bits per image) of the chain from level 0 to ``level``."""
        return float(self.bits[level].sum()) / 2**FRAC_BITS

    def level_of_time(self, t: float) -> int:
        """The level whose time is nearest ``t`` in log-SNR (levels are equally spaced in it)."""
        if not 0.0 < t < 1.0:
            raise LdcodecError(f"stop time t = {t} is outside (0, 1)")
        return int(np.argmin(np.abs(self.t - t) / self.t))

    def level_of_bits(self, bits: float, overhead) -> int:
        """The deepest level whose predicted cost ``expected_bits + overhead(level)`` is at most ``bits``
        (bisection: the cost grows with the level); level 1 if none is."""
        lo, hi = 1, LEVELS
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.expected_bits(mid) + overhead(mid) <= bits else (lo, mid - 1)
        return lo

    def step_costs(self, cost: StepCost) -> np.ndarray:
        """``(L+1, L+1)`` int64 predicted cost of every step ``a -> b`` (``a < b``) under ``cost``, in
        ``2^-FRAC_BITS`` bits, from the steps' per-dim expected bits (:meth:`step_bits`).
        :data:`FORBIDDEN` marks the steps a chain may not take: ``a >= b``; a step of more than one
        fine level in which one dim would carry more than ``cost.max_dim_bits``; an empty step (a
        discrete DDPM process snaps neighbouring levels to one time). Integers only; computed once
        per ``cost.name``."""
        if cost.name not in self._costs:
            out = np.full((LEVELS + 1, LEVELS + 1), FORBIDDEN, dtype=np.int64)
            cap = cost.max_dim_bits << FRAC_BITS
            for a in range(LEVELS):
                b = np.arange(a + 1, LEVELS + 1)
                e = fixed_log2(1.0 + (self.snr[b] - self.snr[a])[:, None] * self.mse[a][None, :]) // 2
                c = np.asarray(cost.per_step(e), dtype=np.int64)
                c[((e.max(1) > cap) & (b - a > 1)) | (self.t[b] >= self.t[a])] = FORBIDDEN
                out[a, b] = c
            self._costs[cost.name] = out
        return self._costs[cost.name]

    def _chains(self, stop: int, cost: StepCost) -> tuple[list[np.ndarray], list[int]]:
        """Dynamic programming over the levels: ``best_k[b] = min_a best_{k-1}[a] + cost(a, b)``.
        Returns the argmin levels of every ``k`` (``parents[k-1][b]``) and the least cost of a chain
        of ``k`` steps from level 0 to ``stop`` (``finals[k-1]``; :data:`FORBIDDEN` if none)."""
        if not 1 <= stop <= LEVELS:
            raise LdcodecError(f"stop level {stop} is outside 1..{LEVELS}")
        step = self.step_costs(cost)[:stop + 1, :stop + 1]
        best = np.full(stop + 1, FORBIDDEN, dtype=np.int64)
        best[0] = 0
        parents, finals = [], []
        for _ in range(stop):
            total = np.minimum(best[:, None] + step, FORBIDDEN)  # [a, b]: reach b by a last step from a
            parent = np.argmin(total, axis=0)  # ties: the earliest level
            best = total[parent, np.arange(stop + 1)]
            parents.append(parent)
            finals.append(int(best[stop]))
        return parents, finals

    def grid(self, stop: int, steps: int, cost: StepCost) -> list[int]:
        """Levels ``0 = g_0 < ... < g_K = stop`` of the ``steps``-step chain with the least predicted
        ``cost`` (:meth:`step_costs`, found by :meth:`_chains`).

        A learned prior's denoiser error ``v`` falls fastest where the model resolves the image
        (often near ``t = 1``: few bits of information there, but a coarse step pays for the error at
        its start), so the steps crowd there; on the exact Gaussian source every chain has about the
        same KL and the steps only trade the simulator's overheads. Where no chain of ``steps`` steps
        keeps every dim within ``cost.max_dim_bits`` per step, ``K`` is the least feasible number above
        ``steps`` (or the most steps there are levels for). Integer arithmetic only, so the decoder
        derives the same chain.
        """
        parents, finals = self._chains(stop, cost)
        feasible = [k for k, c in enumerate(finals, 1) if c < FORBIDDEN]
        k = min((j for j in feasible if j >= steps), default=feasible[-1])
        levels, b = [stop], stop
        for j in range(k, 0, -1):
            b = int(parents[j - 1][b])
            levels.append(b)
        return levels[::-1]

    def predicted_cost(self, levels: list[int], cost: StepCost) -> int:
        """Predicted bits of a chain (``2^-FRAC_BITS`` units): the sum of its steps' :meth:`step_costs`."""
        step = self.step_costs(cost)
        return int(sum(int(step[a, b]) for a, b in zip(levels[:-1], levels[1:])))

    def best_steps(self, stop: int, max_steps: int, cost: StepCost) -> int:
        """The number of steps (at most ``max_steps``) of the chain with the least predicted ``cost``:
        more steps shrink the discretisation gap of a learned prior (its coarse steps cost more than
        the continuous ideal), each costs the simulator's overhead (a PFR chunk's index, a dithered
        quantiser's uniform-noise excess). Integers only, so the decoder derives the same number
        from the stop level."""
        _, finals = self._chains(stop, cost)
        feasible = [(c, k) for k, c in enumerate(finals[:max_steps], 1) if c < FORBIDDEN]
        return min(feasible)[1] if feasible else min(stop, max_steps)

    def step_bits(self, a: int, b: int) -> np.ndarray:
        """Expected KL per dim of the coded step ``a -> b`` (int64, ``2^-FRAC_BITS`` bits):
        ``1/2 log2(1 + (SNR_b - SNR_a) v_i(a))``, what the Analytic-DPM step costs on average.

        For a learned prior this is well above the fine-level sum ``bits[b] - bits[a]`` (the
        continuous ideal) when the step is coarse; for the exact Gaussian source they agree. It is
        computed by :func:`fixed_log2` from one float64 product, so every IEEE-754 machine gets the
        same integers.
        """
        return fixed_log2(1.0 + (self.snr[b] - self.snr[a]) * self.mse[a]) // 2


def fixed_log2(y: np.ndarray) -> np.ndarray:
    """``floor(2^FRAC_BITS log2 y)`` for ``y >= 1`` (int64), by the exponent and repeated squaring of
    the mantissa: only ``frexp`` and correctly rounded products, identical on every IEEE-754
    machine (``np.log2`` is not guaranteed to be)."""
    m, e = np.frexp(np.asarray(y, dtype=np.float64))  # y = m 2^e, m in [0.5, 1)
    m, out = 2.0 * m, (e - 1).astype(np.int64) << FRAC_BITS  # m in [1, 2)
    for k in range(FRAC_BITS - 1, -1, -1):
        m = m * m
        big = m >= 2.0
        out += big.astype(np.int64) << k
        m = np.where(big, 0.5 * m, m)
    return out


def step_densities(process: NoiseProcess, tables: CodingTables, a: int, b: int, dtype=torch.float64):
    """Coefficients of the step ``level a -> level b``: ``(coef_zu, coef_z0, var_q, var_p)`` with
    ``q = N(coef_zu z_u + coef_z0 z0, var_q)`` and ``p = N(coef_zu z_u + coef_z0 z0_hat, var_p)``;
    ``var_p`` is ``(d,)`` (Analytic-DPM with the per-dim denoiser MSE at level ``a``)."""
    tu = torch.tensor([tables.t[a]], dtype=torch.float64)
    ts = torch.tensor([tables.t[b]], dtype=torch.float64)
    one = torch.ones(1, 1, dtype=torch.float64)
    coef_zu = process.posterior(one, 0 * one, tu, ts)[0].item()
    mean_z0, var_q = process.posterior(0 * one, one, tu, ts)
    coef_z0, var_q = mean_z0.item(), var_q.item()
    var_p = var_q + coef_z0**2 * torch.from_numpy(tables.mse[a])
    return coef_zu, coef_z0, var_q, var_p.to(dtype)


def gaussian_information_bits(variances: np.ndarray, snr: float) -> float:
    """``I(X; Z_t) = sum_i 1/2 log2(1 + SNR_t var_i)`` bits for ``X ~ N(0, diag(variances))``."""
    return float(np.sum(0.5 * np.log2(1.0 + snr * np.asarray(variances, np.float64))))


def gaussian_mmse(variances: np.ndarray, snr: float) -> float:
    """``mean_i var_i / (1 + SNR var_i)``: the per-dim MMSE of ``X`` from ``Z_t``."""
    v = np.asarray(variances, np.float64)
    return float(np.mean(v / (1.0 + snr * v)))


def snr_of_mmse(variances: np.ndarray, mse: float) -> float:
    """The SNR at which :func:`gaussian_mmse` equals ``mse`` (bisection in log-SNR)."""
    lo, hi = -30.0, 30.0
    if mse >= gaussian_mmse(variances, math.exp(lo)):
        return math.exp(lo)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if gaussian_mmse(variances, math.exp(mid)) > mse else (lo, mid)
    return math.exp(0.5 * (lo + hi))
