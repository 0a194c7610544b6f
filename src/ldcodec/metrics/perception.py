"""Perception: divergences ``D(p_X || p_Xhat)`` between real and reconstructed images, estimated from features.

Every estimator takes two sample sets as ``(N, D)`` arrays or tensors (features of
real images ``p`` and of reconstructions ``q``, e.g. from
:func:`ldcodec.metrics.features.features`) and returns an :class:`Estimate` with a
95% confidence interval. Divergences are in nats.

- :func:`f_divergence`: variational lower bounds (Nguyen, Wainwright, Jordan 2010, the
  variational characterisation of f-divergences; Nowozin, Cseke, Tomioka 2016, "f-GAN",
  Sec. 2 with the conjugates and output activations of Tables 1-2)
  ``D_f(P||Q) >= sup_T E_P[T(x)] - E_Q[f*(T(x))]`` for KL, Jensen-Shannon, total
  variation, Pearson chi-squared and squared Hellinger, with an MLP critic trained on
  one half of the samples and the bound evaluated on the other half, so the reported
  value is an unbiased estimate of a true lower bound.
- :func:`knn_kl`: the k-nearest-neighbour KL estimator of Wang, Kulkarni, Verdú 2009, Eq. 5.
- :func:`fid` (Heusel et al. 2017) and :func:`kid` (Bińkowski et al. 2018, unbiased MMD^2
  with the cubic polynomial kernel).
- :func:`noise_floor`: any estimator between two disjoint halves of the real set; an
  estimate at or below it carries no evidence of a difference.

Reconstructions come paired with their originals, and estimators that compare single
samples across the two sets assume independent samples: the kNN estimator (an original
is the nearest neighbour of its own reconstruction) and KID's cross term are biased
downwards by pairing. Compare the reconstructions of one half of the images with the
real other half: :func:`unpaired` does that split, at the sample size of :func:`noise_floor`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import nn

from ldcodec.errors import LdcodecError
from ldcodec.seeds import cpu_generator, global_seed

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a ``CONFIDENCE`` interval; ``n`` is the sample count per set it was evaluated on."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def _as_features(x) -> np.ndarray:
    a = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"expected features of shape (N, D), got {a.shape}")
    return a.astype(np.float64)


def _percentile_ci(samples: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def _bootstrap_difference(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile CI of ``mean(a) - mean(b)``, resampling ``a`` and ``b`` independently."""
    ia = rng.integers(0, a.size, size=(n_boot, a.size))
    ib = rng.integers(0, b.size, size=(n_boot, b.size))
    return _percentile_ci(a[ia].mean(axis=1) - b[ib].mean(axis=1))


# --- variational f-divergence bounds -----------------------------------------------------------


@dataclass(frozen=True)
class FDivergence:
    """One f-divergence ``D_f(P||Q) = E_Q[f(dP/dQ)]`` and its variational bound (f-GAN Table 2).

    ``f`` is the generator (numpy, for reference integrals). The critic's raw output
    ``v`` is mapped by ``output`` to ``T = g_f(v)`` in the domain of ``f*``, and
    ``conjugate_of_output(v) = f*(g_f(v))`` is written in a numerically stable form.
    """

    f: Callable[[np.ndarray], np.ndarray]
    output: Callable[[torch.Tensor], torch.Tensor]
    conjugate_of_output: Callable[[torch.Tensor], torch.Tensor]

    def bound_terms(self, v_p: torch.Tensor, v_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample terms ``T(x_p)`` and ``f*(T(x_q))``; the bound is ``mean(first) - mean(second)``."""
        return self.output(v_p), self.conjugate_of_output(v_q)


_LOG2 = math.log(2.0)

#: f-GAN Table 2. Jensen-Shannon uses half the f-GAN generator, so that
#: ``JS = 1/2 KL(P||M) + 1/2 KL(Q||M)`` lies in ``[0, log 2]``: ``(f/2)*(t) = f*(2t)/2``.
#: Squared Hellinger is ``int (sqrt p - sqrt q)^2`` in ``[0, 2]`` (no factor 1/2), TV is ``1/2 int |p - q|``.
DIVERGENCES: dict[str, FDivergence] = {
    "kl": FDivergence(
        f=lambda u: u * np.log(u),
        output=lambda v: v,
        conjugate_of_output=lambda v: torch.exp(v - 1),
    ),
    "js": FDivergence(
        f=lambda u: 0.5 * (u * np.log(u) - (u + 1) * np.log((u + 1) / 2)),
        output=lambda v: 0.5 * (_LOG2 - F.softplus(-v)),
        conjugate_of_output=lambda v: 0.5 * (F.softplus(v) - _LOG2),
    ),
    "tv": FDivergence(
        f=lambda u: 0.5 * np.abs(u - 1),
        output=lambda v: 0.5 * torch.tanh(v),
        conjugate_of_output=lambda v: 0.5 * torch.tanh(v),
    ),
    "chi2": FDivergence(
        f=lambda u: (u - 1) ** 2,
        output=lambda v: v,
        conjugate_of_output=lambda v: v * v / 4 + v,
    ),
    "hellinger": FDivergence(
        f=lambda u: (np.sqrt(u) - 1) ** 2,
        output=lambda v: 1 - torch.exp(-v),
        conjugate_of_output=lambda v: torch.expm1(v),
    ),
}


def _divergence(name: str) -> FDivergence:
    if name not in DIVERGENCES:
        raise LdcodecError(f"unknown f-divergence {name!r}: choose one of {', '.join(DIVERGENCES)}")
    return DIVERGENCES[name]


class Critic(nn.Module):
    """``(N, D) -> (N,)`` MLP critic ``V(x)``; inputs are standardised with statistics of its training data."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, hidden: int = 64):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        d = mean.numel()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)


def train_critic(
    divergence: FDivergence,
    p: torch.Tensor,
    q: torch.Tensor,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden: int = 64,
    seed: int = 0,
) -> Critic:
    """Maximise ``mean_P T - mean_Q f*(T)`` over the critic by Adam on minibatches of ``p, q`` (``(N, D)`` each)."""
    both = torch.cat([p, q])
    with global_seed(seed):  # a reproducible initialisation that leaves the global RNG alone
        critic = Critic(both.mean(0), both.std(0).clamp_min(1e-8), hidden)
    generator = cpu_generator(seed)
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    for _ in range(steps):
        ip = torch.randint(0, len(p), (min(batch_size, len(p)),), generator=generator)
        iq = torch.randint(0, len(q), (min(batch_size, len(q)),), generator=generator)
        t_p, fstar_q = divergence.bound_terms(critic(p[ip]), critic(q[iq]))
        loss = fstar_q.mean() - t_p.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return critic


def f_divergence(
    p_samples,
    q_samples,
    divergence: str = "kl",
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden: int = 64,
    n_boot: int = 200,
    seed: int = 0,
) -> Estimate:
    """Variational lower bound on ``D_f(P||Q)`` (NWJ 2010; f-GAN Sec. 2), ``(N, D)`` and ``(M, D)`` samples.

    Each set is shuffled and split in halves: the critic is trained on the first halves
    (:func:`train_critic`), the bound ``mean_P T - mean_Q f*(T)`` is evaluated on the
    second halves, and its CI comes from a percentile bootstrap (``n_boot`` resamples)
    of those held-out terms. Sets of equal size share one permutation, so paired
    inputs stay paired and no held-out reconstruction has its original in the training
    half. ``divergence`` is one of ``DIVERGENCES``.

    The held-out terms are computed in float64. For KL, chi^2 and squared Hellinger (unbounded
    conjugates) a critic that overfits small, far-apart sets gives a valid but very negative bound;
    where a term is not finite even in float64, the estimate is the vacuous bound ``-inf`` with the
    interval ``(-inf, -inf)``, never NaN. JS and TV are bounded and stay informative.
    """
    div = _divergence(divergence)
    p, q = _as_features(p_samples), _as_features(q_samples)
    if p.shape[1] != q.shape[1] or min(len(p), len(q)) < 4:
        raise ValueError(f"need two sets of >= 4 samples of one dimension, got {p.shape} and {q.shape}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(p))
    p, q = p[order], q[order if len(q) == len(p) else rng.permutation(len(q))]
    p_train, p_eval = torch.as_tensor(p, dtype=torch.float32).tensor_split(2)
    q_train, q_eval = torch.as_tensor(q, dtype=torch.float32).tensor_split(2)
    critic = train_critic(div, p_train, q_train, steps, batch_size, lr, hidden, seed)
    with torch.no_grad():  # float64: KL's exp(v - 1) overflows float32 at v = 89, e.g. an overfit critic
        t_p, fstar_q = div.bound_terms(critic(p_eval).double(), critic(q_eval).double())
    a, b = t_p.numpy(), fstar_q.numpy()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):  # the bound is vacuous, not undefined
        return Estimate(-math.inf, -math.inf, -math.inf, min(len(a), len(b)))
    low, high = _bootstrap_difference(a, b, n_boot, rng)
    return Estimate(float(a.mean() - b.mean()), low, high, min(len(a), len(b)))


# --- kNN KL -------------------------------------------------------------------------------------


def knn_kl(p_samples, q_samples, k: int = 5, n_boot: int = 200, seed: int = 0) -> Estimate:
    """k-NN estimate of ``KL(P||Q)`` in nats, Wang, Kulkarni, Verdú 2009 Eq. 5.

    ``D = d/n sum_i log(nu_k(i) / rho_k(i)) + log(m / (n - 1))`` for ``n`` samples of
    ``P`` and ``m`` of ``Q`` in ``d`` dimensions, where ``rho_k(i)`` is the distance from
    ``x_i`` to its k-th nearest neighbour among the other ``P`` samples and ``nu_k(i)``
    to its k-th nearest among the ``Q`` samples. Consistent (not a bound); meant for
    low-dimensional features; ``p`` and ``q`` must be independent samples (see
    :func:`unpaired`). The CI bootstraps the ``n`` per-sample log-ratio terms with the
    neighbour distances held fixed.
    """
    p, q = _as_features(p_samples), _as_features(q_samples)
    n, d = p.shape
    if q.shape[1] != d or n <= k or len(q) < k:
        raise ValueError(f"knn_kl needs more than k={k} samples per set of one dimension, got {p.shape} and {q.shape}")
    rho = cKDTree(p).query(p, k=k + 1)[0][:, -1]  # the nearest is the point itself
    nu = cKDTree(q).query(p, k=k)[0]
    nu = nu[:, -1] if nu.ndim == 2 else nu
    if np.any(rho == 0) or np.any(nu == 0):
        raise LdcodecError(
            f"knn_kl found a zero distance to a {k}-th nearest neighbour (repeated feature vectors): the "
            "estimator needs samples of a continuous distribution; deduplicate the sets or use f_divergence"
        )
    terms = d * np.log(nu / rho) + math.log(len(q) / (n - 1))
    rng = np.random.default_rng(seed)
    low, high = _percentile_ci(terms[rng.integers(0, n, size=(n_boot, n))].mean(axis=1))
    return Estimate(float(terms.mean()), low, high, n)


# --- FID and KID --------------------------------------------------------------------------------


def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix through its eigendecomposition (tiny negative eigenvalues clipped)."""
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """``||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2)`` (Heusel et al. 2017, Sec. "FID").

    ``tr (C1 C2)^1/2`` is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix ``C1^1/2 C2 C1^1/2``, which is stable where ``sqrtm(C1 C2)`` is not.
    """
    s1 = _sqrtm_psd(cov1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(s1 @ cov2 @ s1), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * cross)


def _fid_arrays(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def fid(f1, f2, n_boot: int = 200, seed: int = 0) -> Estimate:
    """Fréchet distance between Gaussians fitted to ``(N, D)`` and ``(M, D)`` features, with a bootstrap CI.

    FID is biased upwards at finite sample size, and a bootstrap resample (with its
    repeated points) more so; the CI is therefore the percentile interval of the
    bootstrap distribution shifted by its bias, ``mean(boot) - FID``, so that it is
    centred on the estimate. The finite-sample bias of the estimate itself (positive
    even for two samples of one law) is not corrected: compare with :func:`noise_floor`.
    """
    a, b = _as_features(f1), _as_features(f2)
    if a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"fid needs two sets of >= 2 samples of one dimension, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    boot = [
        _fid_arrays(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))]) for _ in range(n_boot)
    ]
    value = _fid_arrays(a, b)
    low, high = _percentile_ci(np.asarray(boot) - (np.mean(boot) - value))
    return Estimate(value, low, high, min(len(a), len(b)))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, Lemma 6) with the KID kernel ``k(a, b) = (a.b / d + 1)^3``.

    ``x``, ``y``: ``(m, d)`` and ``(n, d)``; diagonal terms of the within-set sums are excluded.
    """
    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        g = a @ b.T / x.shape[1] + 1
        return g * g * g

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    m, n = len(x), len(y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def kid(f1, f2, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> Estimate:
    """Kernel Inception Distance (Bińkowski et al. 2018, Sec. 2.3) on ``(N, D)`` and ``(M, D)`` features.

    ``f1`` and ``f2`` must be independent samples (see :func:`unpaired`). The mean of
    :func:`mmd2_unbiased` over ``n_subsets`` random subsets of
    ``min(subset_size, N // 2, M // 2)`` samples per set (at most half, so that subsets
    differ). The CI is the percentile range of the subset estimates: the spread of a KID
    measured on one subset, conservative for the mean.
    """
    a, b = _as_features(f1), _as_features(f2)
    m = min(subset_size, len(a) // 2, len(b) // 2)
    if a.shape[1] != b.shape[1] or m < 2:
        raise ValueError(f"kid needs two sets of >= 4 samples of one dimension, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            mmd2_unbiased(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)])
            for _ in range(n_subsets)
        ]
    )
    low, high = _percentile_ci(values)
    return Estimate(float(values.mean()), low, high, m)


# --- noise floor --------------------------------------------------------------------------------


def unpaired(real_features, recon_features, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split paired ``(N, D)`` features of originals and their reconstructions into independent samples.

    Returns the real features of a random half of the images and the reconstruction
    features of the other half: ``(N - N // 2, D)`` and ``(N // 2, D)`` arrays, no image in both.
    """
    real, recon = _as_features(real_features), _as_features(recon_features)
    if real.shape != recon.shape:
        raise ValueError(f"unpaired needs paired features of one shape, got {real.shape} and {recon.shape}")
    order = np.random.default_rng(seed).permutation(len(real))
    half = len(real) - len(real) // 2
    return real[order[:half]], recon[order[half:]]


def noise_floor(estimator: Callable[..., Estimate], real_features, seed: int = 0) -> Estimate:
    """``estimator(A, B)`` for the two disjoint random halves ``A, B`` of the real ``(N, D)`` features
    that :func:`unpaired` makes with the same ``seed``.

    Evaluation compares ``A`` with the reconstructions of the images of ``B`` (``unpaired(real,
    recon, seed)``), so the floor is the value a perfect reconstruction gets at exactly the
    estimate's sample sizes, with the same finite-sample bias (for FID, of order ``D / N``): an
    estimate is meaningful only above it. Bind the estimator's options first, e.g.
    ``noise_floor(functools.partial(f_divergence, divergence="js"), f)``.
    """
    return estimator(*unpaired(real_features, real_features, seed=seed))
