"""Gaussian noise processes: one object per noise schedule.

Every process is a Gaussian diffusion ``q(z_t | z0) = N(alpha_t z0, sigma_t^2 I)`` for ``t`` in
``[0, 1]``, Markov in ``t``. Equivalently it is the linear SDE ``dz = f(t) z dt + g(t) dW``
(Song et al. 2021, "Score-based generative modeling through SDEs", Eq. 5) with
``f = d log(alpha_t)/dt`` and ``g^2 = d(sigma_t^2)/dt - 2 f sigma_t^2``, whose transitions are
``q(z_t | z_s) = N(alpha_{t|s} z_s, sigma_{t|s}^2 I)`` with ``alpha_{t|s} = alpha_t / alpha_s`` and
``sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2`` (Kingma et al. 2021, "Variational diffusion
models" (VDM), Eq. 2-4). The likelihood weighting is ``w(t) = g(t)^2 / sigma_t^2 = -d log SNR / dt``.

Shapes: times ``t`` are ``(B,)`` tensors; latents are ``(B, d)`` or ``(B, C, h, w)``; per-sample
scalars (alpha, sigma, variances, log-densities) are returned as ``(B,)``. All schedules are
computed in the dtype of ``t`` (pass float64 times for float64 results) from log-space closed
forms with ``expm1``/``softplus``, so that small ``t`` keeps full precision.

Implementations: ``VPSDE``, ``SubVPSDE`` and ``VESDE`` (Song et al. 2021, Sec. 3.4 and App. B)
and ``DiscreteVP`` (the DDPM chain of Ho et al. 2020 with linear betas, or the cosine schedule of
Nichol & Dhariwal 2021, Eq. 17, placed at ``t = i / N``). The methods ``eps_to_z0`` and ``eps_to_score``
are the one place that converts the denoisers' ``eps`` into the other parameterisations the samplers use.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F

from ldcodec.errors import LdcodecError
from ldcodec.tensors import bcast, sum_except_batch

Tensor = torch.Tensor


class NoiseProcess(abc.ABC):
    """Abstract Gaussian diffusion ``q(z_t | z0) = N(alpha_t z0, sigma_t^2 I)``, ``t`` in [0, 1].

    Subclasses give ``log_alpha_sigma``, ``f_g2``, ``transition`` and ``t_from_log_snr``;
    everything else (marginals, posteriors, the reverse drifts, the prior and the
    parameterisation conversions) is derived here.
    """

    name: str
    continuous: bool = True
    prior_std: float = 1.0

    def __init__(self, t_min: float):
        if not 0.0 < t_min < 1.0:
            raise LdcodecError(f"t_min must lie in (0, 1), got {t_min}; pass e.g. t_min=1e-5")
        self.t_min = float(t_min)

    # -- schedule (subclasses) -------------------------------------------------------------
    @abc.abstractmethod
    def log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(log alpha_t, log sigma_t)``, each ``(B,)``, for times ``t`` of shape ``(B,)``."""

    @abc.abstractmethod
    def f_g2(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift coefficient ``f(t)`` and squared diffusion ``g(t)^2`` of the SDE, each ``(B,)``."""

    @abc.abstractmethod
    def transition(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha_{t|s}, sigma_{t|s}^2)`` of ``q(z_t | z_s)`` for ``s <= t``, each ``(B,)`` (VDM Eq. 3-4)."""

    @abc.abstractmethod
    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Inverse of ``log_snr``: the time ``(B,)`` at which ``log(alpha^2 / sigma^2)`` is ``log_snr``."""

    def config(self) -> dict:
        """``{"name": ..., **kwargs}`` such that ``make_process(**config)`` rebuilds this process (a
        continuous SDE: its two schedule ends of :meth:`_set_ends` and ``t_min``)."""
        return {"name": self.name, **{k: getattr(self, k) for k in self._ends}, "t_min": self.t_min}

    def _set_ends(self, **ends: float) -> None:
        """Store a continuous schedule's two ends, ``low < high`` both positive, as float attributes."""
        (lo_name, lo), (hi_name, hi) = ends.items()
        if not 0.0 < lo < hi:
            raise LdcodecError(f"{self.name.upper()} needs 0 < {lo_name} < {hi_name}, got {lo}, {hi}")
        for k, v in ends.items():
            setattr(self, k, float(v))
        self._ends = tuple(ends)

    # -- derived schedule ------------------------------------------------------------------
    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha_t, sigma_t)``, each ``(B,)``."""
        log_alpha, log_sigma = self.log_alpha_sigma(t)
        return log_alpha.exp(), log_sigma.exp()

    def log_snr(self, t: Tensor) -> Tensor:
        """``lambda_t = log(alpha_t^2 / sigma_t^2)``, ``(B,)``, decreasing in ``t``."""
        log_alpha, log_sigma = self.log_alpha_sigma(t)
        return 2.0 * (log_alpha - log_sigma)

    def likelihood_weight(self, t: Tensor) -> Tensor:
        """``w(t) = g(t)^2 / sigma_t^2 = -d lambda_t / dt``, ``(B,)`` (Song et al. 2021b, Thm. 1)."""
        _, g2 = self.f_g2(t)
        _, log_sigma = self.log_alpha_sigma(t)
        return g2 * torch.exp(-2.0 * log_sigma)

    def marginal(self, z0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Sample of ``q(z_t | z0)``: ``alpha_t z0 + sigma_t eps``, same shape as ``z0``."""
        alpha, sigma = self.alpha_sigma(t)
        return bcast(alpha, z0) * z0 + bcast(sigma, z0) * eps

    def drift_diffusion(self, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(t) z, g(t))`` of ``dz = f(t) z dt + g(t) dW``: drift like ``z`` and ``g`` of shape ``(B,)``."""
        f, g2 = self.f_g2(t)
        return bcast(f, z) * z, g2.sqrt()

    def reverse_drift(self, z: Tensor, t: Tensor, eps: Tensor, flow: bool = False) -> Tensor:
        """Drift of the reverse-time SDE (``flow=False``) or of the probability-flow ODE (``flow=True``).

        Song et al. 2021, Eq. 6 and Eq. 13 with ``score = -eps / sigma_t``:
        ``f z + g^2 eps / sigma`` and ``f z + g^2 eps / (2 sigma)``, shaped like ``z``.
        """
        f, g2 = self.f_g2(t)
        _, log_sigma = self.log_alpha_sigma(t)
        coef = g2 * torch.exp(-log_sigma) * (0.5 if flow else 1.0)
        return bcast(f, z) * z + bcast(coef, z) * eps

    def posterior(self, z_t: Tensor, z0: Tensor, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (like ``z_t``) and isotropic variance ``(B,)`` of ``q(z_s | z_t, z0)`` for ``s < t``.

        Ho et al. 2020, Eq. 6-7, in the general form of VDM (Kingma et al. 2021), App. A:
        ``mu = alpha_{t|s} sigma_s^2 / sigma_t^2 z_t + alpha_s sigma_{t|s}^2 / sigma_t^2 z0`` and
        ``var = sigma_{t|s}^2 sigma_s^2 / sigma_t^2``. Valid for every process and every ``s < t``.
        """
        alpha_ts, var_ts = self.transition(t, s)
        log_alpha_s, log_sigma_s = self.log_alpha_sigma(s)
        _, log_sigma_t = self.log_alpha_sigma(t)
        ratio = torch.exp(2.0 * (log_sigma_s - log_sigma_t))  # sigma_s^2 / sigma_t^2
        coef_zt = alpha_ts * ratio
        coef_z0 = log_alpha_s.exp() * var_ts * torch.exp(-2.0 * log_sigma_t)
        mean = bcast(coef_zt, z_t) * z_t + bcast(coef_z0, z0) * z0
        return mean, var_ts * ratio

    # -- prior p(z_1) ----------------------------------------------------------------------
    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw ``z_1 ~ N(0, prior_std^2 I)`` of the given shape."""
        if device is None and generator is not None:
            device = generator.device
        return self.prior_std * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_logp(self, z: Tensor) -> Tensor:
        """``log N(z; 0, prior_std^2 I)`` in nats, ``(B,)``."""
        dims = z[0].numel()
        log_norm = 0.5 * dims * math.log(2.0 * math.pi * self.prior_std**2)
        return -sum_except_batch(z.square()) / (2.0 * self.prior_std**2) - log_norm

    def prior_kl(self, z0: Tensor) -> Tensor:
        """``KL(q(z_1 | z0) || p(z_1))`` in nats, ``(B,)``: the prior term of the bound (VDM Eq. 11)."""
        t1 = torch.ones(z0.shape[0], dtype=z0.dtype, device=z0.device)
        log_alpha, log_sigma = self.log_alpha_sigma(t1)
        dims = z0[0].numel()
        log_ratio = 2.0 * (log_sigma - math.log(self.prior_std))  # log(sigma_1^2 / prior_std^2)
        per_dim = 0.5 * (log_ratio.exp() - 1.0 - log_ratio)
        quad = torch.exp(2.0 * log_alpha) * sum_except_batch(z0.square()) / (2.0 * self.prior_std**2)
        return dims * per_dim + quad

    # -- parameterisations (the one place that converts eps) ----------------------------
    def eps_to_z0(self, z_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``z0 = (z_t - sigma_t eps) / alpha_t``."""
        alpha, sigma = self.alpha_sigma(t)
        return (z_t - bcast(sigma, z_t) * eps) / bcast(alpha, z_t)

    def eps_to_score(self, z_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``grad log p_t(z_t) = -eps / sigma_t``."""
        _, sigma = self.alpha_sigma(t)
        return -eps / bcast(sigma, eps)

    def gaussian_eps(self, z_t: Tensor, t: Tensor, mean: Tensor | float = 0.0, std: Tensor | float = 1.0) -> Tensor:
        """Exact ``E[eps | z_t]`` when the data is ``N(mean, diag(std^2))``, shaped like ``z_t``.

        ``sigma_t (z_t - alpha_t mean) / (alpha_t^2 std^2 + sigma_t^2)``; with ``mean=0, std=1`` it is the
        ``N(0, I)`` term of the LSGM mixed score (Vahdat et al. 2021, Sec. 3.2). ``mean`` and ``std``
        are floats or tensors of the latent shape (without the batch dimension).
        """
        alpha, sigma = self.alpha_sigma(t)
        alpha, sigma = bcast(alpha, z_t), bcast(sigma, z_t)
        mean = torch.as_tensor(mean, dtype=z_t.dtype, device=z_t.device)
        std = torch.as_tensor(std, dtype=z_t.dtype, device=z_t.device)
        return sigma * (z_t - alpha * mean) / (alpha.square() * std.square() + sigma.square())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def _vp_transition(log_alpha_t: Tensor, log_alpha_s: Tensor) -> tuple[Tensor, Tensor]:
    """VP transition: ``alpha_{t|s} = alpha_t / alpha_s`` and ``sigma_{t|s}^2 = 1 - alpha_{t|s}^2``."""
    delta = log_alpha_t - log_alpha_s
    return delta.exp(), -torch.expm1(2.0 * delta)


def _log_one_minus_exp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate near 0."""
    return torch.log(-torch.expm1(x))


class VPSDE(NoiseProcess):
    """Variance-preserving SDE, ``beta(t) = beta_min + t (beta_max - beta_min)`` (Song et al. 2021, Eq. 11).

    ``log alpha_t = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2``, ``sigma_t^2 = 1 - alpha_t^2``,
    ``f = -beta / 2``, ``g^2 = beta``.
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5):
        super().__init__(t_min)
        self._set_ends(beta_min=beta_min, beta_max=beta_max)

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * t.square() * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _t_from_log_alpha2(self, log_alpha2: Tensor) -> Tensor:
        """Solve ``(b1 - b0) t^2 / 2 + b0 t = c`` with ``c = -log alpha^2`` (cancellation-free root)."""
        c = -log_alpha2
        b0, db = self.beta_min, self.beta_max - self.beta_min
        return 2.0 * c / (b0 + torch.sqrt(b0 * b0 + 2.0 * db * c))

    def log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha = self._log_alpha(t)
        return log_alpha, 0.5 * _log_one_minus_exp(2.0 * log_alpha)

    def f_g2(self, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self._beta(t)
        return -0.5 * beta, beta

    def transition(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        return _vp_transition(self._log_alpha(t), self._log_alpha(s))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return self._t_from_log_alpha2(F.logsigmoid(log_snr))  # VP: alpha^2 = sigmoid(lambda)


class SubVPSDE(VPSDE):
    """Sub-VP SDE (Song et al. 2021, Eq. 12): VP's ``alpha_t`` with ``sigma_t = 1 - alpha_t^2``.

    ``f = -beta / 2``, ``g^2 = beta (1 - alpha_t^4)``. Its transitions follow from the linear-SDE
    identity: ``sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2 = (1 - alpha_{t|s}^2)(1 - alpha_t^2 alpha_s^2)``.
    """

    name = "subvp"

    def log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha = self._log_alpha(t)
        return log_alpha, _log_one_minus_exp(2.0 * log_alpha)

    def f_g2(self, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self._beta(t)
        return -0.5 * beta, -beta * torch.expm1(4.0 * self._log_alpha(t))

    def transition(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha_t, log_alpha_s = self._log_alpha(t), self._log_alpha(s)
        alpha_ts, one_minus_ratio2 = _vp_transition(log_alpha_t, log_alpha_s)
        return alpha_ts, one_minus_ratio2 * -torch.expm1(2.0 * (log_alpha_t + log_alpha_s))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        # SNR = u / (1 - u)^2 with u = alpha^2; the root in (0, 1) is u = 2S / (2S + 1 + sqrt(4S + 1)),
        # i.e. log u = -log1p((1 + sqrt(4S + 1)) / (2S)), accurate in float32 at large S too.
        snr = log_snr.exp()
        return self._t_from_log_alpha2(-torch.log1p((1.0 + torch.sqrt(4.0 * snr + 1.0)) / (2.0 * snr)))


class VESDE(NoiseProcess):
    """Variance-exploding SDE (Song et al. 2021, Eq. 9): ``alpha_t = 1``, ``sigma_t = s_min (s_max/s_min)^t``.

    ``f = 0``, ``g^2 = d sigma_t^2 / dt = 2 sigma_t^2 log(s_max / s_min)``; prior ``N(0, s_max^2 I)``.
    As in score_sde the marginal keeps ``sigma_0 = sigma_min``; transitions between times in ``(0, 1]``
    are exact (``sigma_{t|s}^2 = sigma_t^2 - sigma_s^2``).
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5):
        super().__init__(t_min)
        self._set_ends(sigma_min=sigma_min, sigma_max=sigma_max)
        self.prior_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(t), math.log(self.sigma_min) + t * self._log_ratio

    def f_g2(self, t: Tensor) -> tuple[Tensor, Tensor]:
        _, log_sigma = self.log_alpha_sigma(t)
        return torch.zeros_like(t), 2.0 * self._log_ratio * torch.exp(2.0 * log_sigma)

    def transition(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        _, log_sigma_t = self.log_alpha_sigma(t)
        _, log_sigma_s = self.log_alpha_sigma(s)
        var = -torch.exp(2.0 * log_sigma_t) * torch.expm1(2.0 * (log_sigma_s - log_sigma_t))
        return torch.ones_like(t), var

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return (-0.5 * log_snr - math.log(self.sigma_min)) / self._log_ratio


def _linear_betas(n: int) -> Tensor:
    """Ho et al. 2020 betas ``linspace(1e-4, 0.02)`` for 1000 steps, scaled by ``1000 / N``."""
    scale = 1000.0 / n
    return torch.linspace(1e-4 * scale, 0.02 * scale, n, dtype=torch.float64)


def _cosine_betas(n: int, offset: float = 0.008) -> Tensor:
    """Nichol & Dhariwal 2021, Eq. 17: ``alpha_bar(t) = cos^2(pi/2 (t + s)/(1 + s))``, as betas."""
    t = torch.arange(n + 1, dtype=torch.float64) / n
    f = torch.cos((t + offset) / (1.0 + offset) * math.pi / 2.0).square()
    return 1.0 - f[1:] / f[:-1]


_SCHEDULES = {"linear": _linear_betas, "cosine": _cosine_betas}


class DiscreteVP(NoiseProcess):
    """The DDPM chain (Ho et al. 2020) as a VP process on the grid ``t = i / N``, ``i = 0..N``.

    ``alpha_bar_i = prod_{j<=i} (1 - beta_j)`` with ``alpha_i^2 = alpha_bar_i``, ``sigma_i^2 = 1 - alpha_bar_i``;
    betas are clipped to 0.999 (Nichol & Dhariwal 2021, Sec. 3.2). Between grid points
    ``log alpha_bar`` is linear in ``t``, so the process is also a VP SDE with piecewise-constant
    ``f = N log(1 - beta_i) / 2`` and ``g^2 = -2 f`` (the DDPM <-> VP-SDE correspondence of Song et
    al. 2021, App. B): the continuous samplers run on it unchanged. ``t_min = 1 / N`` is step 1,
    where the DDPM bound places its reconstruction term.
    """

    name = "ddpm"
    continuous = False

    def __init__(self, N: int = 1000, schedule: str = "linear"):
        if int(N) != N or N < 2:
            raise LdcodecError(f"DiscreteVP needs an integer N >= 2 steps, got {N}")
        if schedule not in _SCHEDULES:
            raise LdcodecError(f"unknown DDPM schedule {schedule!r}; valid names: {', '.join(sorted(_SCHEDULES))}")
        self.N, self.schedule = int(N), schedule
        super().__init__(1.0 / self.N)
        betas = _SCHEDULES[schedule](self.N).clamp(max=0.999)
        log_alpha_bar = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-betas), 0)])
        self.log_alpha_table = 0.5 * log_alpha_bar  # (N+1,): log alpha_i, float64

    def config(self) -> dict:
        return {"name": self.name, "N": self.N, "schedule": self.schedule}

    def grid_log_snr(self, dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> Tensor:
        """``lambda_i`` on the grid, ``(N+1,)`` (``lambda_0 = +inf``)."""
        log_alpha = self.log_alpha_table.to(device=device, dtype=dtype)
        return 2.0 * log_alpha - _log_one_minus_exp(2.0 * log_alpha)

    def _table(self, t: Tensor) -> Tensor:
        return self.log_alpha_table.to(device=t.device, dtype=t.dtype)

    def _log_alpha(self, t: Tensor) -> Tensor:
        table = self._table(t)
        x = (t * self.N).clamp(0.0, float(self.N))
        i0 = x.floor().clamp(max=self.N - 1).long()
        return table[i0] + (x - i0) * (table[i0 + 1] - table[i0])

    def log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha = self._log_alpha(t)
        return log_alpha, 0.5 * _log_one_minus_exp(2.0 * log_alpha)

    def f_g2(self, t: Tensor) -> tuple[Tensor, Tensor]:
        table = self._table(t)
        # Segment (i-1, i] containing t, so that a step down from t = i/N uses beta_i; the 1e-9
        # absorbs the rounding of t = i / N in floating point.
        seg = torch.ceil(t * self.N - 1e-9).long().clamp(1, self.N) - 1
        f = self.N * (table[seg + 1] - table[seg])
        return f, -2.0 * f

    def transition(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        return _vp_transition(self._log_alpha(t), self._log_alpha(s))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        # log alpha is linear in t between grid points and lambda is monotone in log alpha.
        table = self._table(log_snr)
        target = 0.5 * F.logsigmoid(log_snr)  # log alpha at the requested lambda
        idx = torch.searchsorted(-table, -target.contiguous()).clamp(1, self.N)
        lo, hi = table[idx - 1], table[idx]
        frac = ((target - lo) / (hi - lo)).clamp(0.0, 1.0)
        return (idx - 1 + frac) / self.N


PROCESSES: dict[str, type[NoiseProcess]] = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE, "ddpm": DiscreteVP}


def make_process(name: str, **kwargs) -> NoiseProcess:
    """Build a noise process by registry name (``vp``, ``subvp``, ``ve``, ``ddpm``) and its kwargs."""
    if name not in PROCESSES:
        raise LdcodecError(f"unknown noise process {name!r}; valid names: {', '.join(sorted(PROCESSES))}")
    try:
        return PROCESSES[name](**kwargs)
    except TypeError as err:
        raise LdcodecError(f"bad arguments for noise process {name!r}: {err}; see {PROCESSES[name].__name__}") from err
