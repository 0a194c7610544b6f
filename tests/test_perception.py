"""Divergence estimators against closed forms on Gaussians; FID, KID and the noise floor."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from ldcodec.errors import LdcodecError
from ldcodec.metrics.perception import (
    DIVERGENCES,
    Estimate,
    f_divergence,
    fid,
    frechet_distance,
    kid,
    knn_kl,
    mmd2_unbiased,
    noise_floor,
    unpaired,
)

MU = 1.0  # P = N(MU, 1), Q = N(0, 1)
CLOSED_FORM = {
    "kl": MU**2 / 2,
    "tv": 2 * stats.norm.cdf(MU / 2) - 1,
    "chi2": math.exp(MU**2) - 1,
    "hellinger": 2 * (1 - math.exp(-(MU**2) / 8)),
}
# relative tolerance of a single estimate from 2 x 1500 held-out samples (chi^2's bound has heavy tails)
TOLERANCE = {"kl": 0.15, "js": 0.15, "tv": 0.1, "chi2": 0.25, "hellinger": 0.15}


def _numerical(name: str) -> float:
    """``E_Q[f(p/q)]`` by quadrature: the reference value of each divergence."""
    p, q, f = stats.norm(MU, 1).pdf, stats.norm(0, 1).pdf, DIVERGENCES[name].f
    return integrate.quad(lambda x: q(x) * f(p(x) / q(x)), -30, 30, limit=200)[0]


def _gaussian_pair(seed: int, n: int = 3000, dim: int = 1):
    rng = np.random.default_rng(seed)
    return rng.normal(MU, 1, (n, dim)), rng.normal(0, 1, (n, dim))


@pytest.mark.parametrize("name", sorted(CLOSED_FORM))
def test_generators_match_closed_forms(name):
    assert _numerical(name) == pytest.approx(CLOSED_FORM[name], rel=1e-6)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_f_divergence_bounds_on_two_gaussians(name):
    true = _numerical(name)
    estimates = [f_divergence(*_gaussian_pair(seed), divergence=name, steps=300, seed=seed) for seed in range(3)]
    values = np.array([e.value for e in estimates])
    assert np.all(np.abs(values - true) <= TOLERANCE[name] * true), (values, true)
    assert values.mean() <= true * 1.02, "a variational bound must not exceed the divergence on average"
    assert all(e.ci_low <= e.value <= e.ci_high and e.n == 1500 for e in estimates)


def test_f_divergence_of_one_law_is_near_zero_and_unknown_names_fail():
    x, _ = _gaussian_pair(0)
    y, _ = _gaussian_pair(1)
    est = f_divergence(x, y, divergence="js", steps=200)
    assert abs(est.value) < 0.01 and est.ci_low < 0.005
    with pytest.raises(LdcodecError, match="choose one of"):
        f_divergence(x, y, divergence="wasserstein")


def _far_apart(seed: int = 0, n: int = 100, dim: int = 64, shift: float = 5.0):
    """Two small sets that differ in 8 of 64 features: a critic trained on 50 of each overfits."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(0, 1, (n, dim)), rng.normal(0, 1, (n, dim))
    q[:, :8] += shift * rng.normal(size=(n, 8))
    return p, q


@pytest.mark.parametrize("name", ["kl", "chi2", "hellinger"])
def test_an_overfit_critic_gives_a_finite_bound_with_a_finite_interval(name):
    est = f_divergence(*_far_apart(), divergence=name, steps=300)
    assert math.isfinite(est.value) and est.ci_low <= est.value <= est.ci_high, est  # KL was -inf (float32 exp)
    assert math.isfinite(est.ci_low) and math.isfinite(est.ci_high)


def test_a_bound_that_overflows_in_float64_is_the_vacuous_bound_not_nan(monkeypatch):
    import ldcodec.metrics.perception as perception

    class Huge(torch.nn.Module):
        def forward(self, x):
            return torch.full((len(x),), 1000.0)

    monkeypatch.setattr(perception, "train_critic", lambda *a, **k: Huge())
    est = f_divergence(*_far_apart(), divergence="kl", steps=1)
    assert est.value == est.ci_low == est.ci_high == -math.inf and est.n == 50


def _kl_gaussians(m1, s1, m2, s2):
    s2_inv = np.linalg.inv(s2)
    dm = m2 - m1
    return 0.5 * (np.trace(s2_inv @ s1) + dm @ s2_inv @ dm - len(m1) + np.log(np.linalg.det(s2) / np.linalg.det(s1)))


def test_knn_kl_on_two_gaussians():
    m1, s1, m2, s2 = np.array([1.0, 0.0]), np.eye(2), np.zeros(2), np.diag([2.0, 1.0])
    true = _kl_gaussians(m1, s1, m2, s2)
    values, covered = [], 0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        est = knn_kl(rng.multivariate_normal(m1, s1, 3000), rng.multivariate_normal(m2, s2, 3000), k=5, seed=seed)
        values.append(est.value)
        covered += est.ci_low <= true <= est.ci_high
    assert abs(np.mean(values) - true) < 0.04
    assert covered >= 3


def test_knn_kl_same_law_and_duplicates():
    rng = np.random.default_rng(5)
    est = knn_kl(rng.normal(size=(2000, 3)), rng.normal(size=(2000, 3)))
    assert abs(est.value) < 0.06
    x = rng.normal(size=(100, 2))
    with pytest.raises(LdcodecError, match="repeated"):
        knn_kl(np.concatenate([x, x[:1]]), rng.normal(size=(100, 2)), k=1)
    assert np.isfinite(knn_kl(np.concatenate([x, x[:1]]), rng.normal(size=(100, 2)), k=2).value)


def test_fid_of_a_set_with_itself_is_zero_and_matches_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))  # correlated features
    assert fid(x, x, n_boot=20).value == pytest.approx(0.0, abs=1e-8)
    # diagonal covariances: FID = ||mu1 - mu2||^2 + sum (sqrt a - sqrt b)^2
    a, b, mu = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 1.0]), np.array([0.5, -1.0, 0.0])
    closed = mu @ mu + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu, np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(closed, rel=1e-10)
    y1 = rng.normal(size=(20000, 3)) * np.sqrt(a) + mu
    y2 = rng.normal(size=(20000, 3)) * np.sqrt(b)
    est = fid(y1, y2, n_boot=50)
    assert est.value == pytest.approx(closed, rel=0.05)
    assert est.ci_low <= closed <= est.ci_high
    assert est.value == pytest.approx(fid(y2, y1, n_boot=2).value, rel=1e-9)


def test_mmd2_unbiased_matches_explicit_sum_and_kid_separates_laws():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + 0.5
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    within = lambda s: sum(k(s[i], s[j]) for i in range(len(s)) for j in range(len(s)) if i != j) / (  # noqa: E731
        len(s) * (len(s) - 1)
    )
    cross = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    assert mmd2_unbiased(x, y) == pytest.approx(within(x) + within(y) - 2 * cross, rel=1e-12)

    same = kid(rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8)), n_subsets=20, subset_size=300)
    shifted = kid(rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8)) + 0.3, n_subsets=20, subset_size=300)
    assert same.ci_low < 0 < same.ci_high and same.n == 300
    assert shifted.ci_low > 0 and shifted.value > 10 * abs(same.value)


def test_noise_floor_uses_disjoint_halves():
    x = np.arange(40, dtype=float).reshape(20, 2)
    seen = []

    def record(a, b):
        seen.extend([a, b])
        return Estimate(0.0, 0.0, 0.0, len(a))

    assert noise_floor(record, x, seed=3).to_dict() == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 10}
    rows_a, rows_b = {tuple(r) for r in seen[0]}, {tuple(r) for r in seen[1]}
    assert not rows_a & rows_b and rows_a | rows_b == {tuple(r) for r in x}
    # the floor's halves are the estimate's: the same real half A, and B where the estimate has
    # the reconstructions of B's images (so both have the same sample sizes and bias)
    real_half, recon_half = unpaired(x, -x, seed=3)
    assert np.array_equal(seen[0], real_half) and np.array_equal(seen[1], -recon_half)

    floor = noise_floor(fid, np.random.default_rng(0).normal(size=(2000, 4)))
    assert 0 < floor.value < 0.05 and floor.ci_low <= floor.value <= floor.ci_high


def test_unpaired_split_removes_the_pairing_bias_of_knn():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(4000, 4))
    recon = real + 0.05 * rng.normal(size=real.shape)  # reconstructions close to their originals
    p, q = unpaired(real, recon)
    assert p.shape == (2000, 4) and q.shape == (2000, 4)
    assert not {tuple(r) for r in p} & {tuple(r) for r in real[np.isin(recon, q).all(axis=1)]}
    assert knn_kl(real, recon).value < -0.15  # an original is its reconstruction's nearest neighbour
    assert abs(knn_kl(p, q).value) < 0.05
