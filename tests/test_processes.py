"""Noise processes: schedules, their inverses, SDE coefficients, transitions, posteriors, prior."""

import math

import pytest
import torch

from ldcodec.diffusion.processes import PROCESSES, DiscreteVP, make_process
from ldcodec.errors import LdcodecError

F64 = torch.float64
CONFIGS = [
    {"name": "vp"},
    {"name": "subvp"},
    {"name": "ve"},
    {"name": "ddpm", "N": 1000},
    {"name": "ddpm", "N": 50, "schedule": "cosine"},
]
IDS = ["vp", "subvp", "ve", "ddpm-linear", "ddpm-cosine"]


@pytest.fixture(params=CONFIGS, ids=IDS)
def process(request):
    return make_process(**request.param)


def off_grid_times(process, n, generator):
    """Times in (t_min, 1) that avoid the DDPM grid points (where f is discontinuous)."""
    t = 0.02 + 0.96 * torch.rand(n, generator=generator, dtype=F64)
    if not process.continuous:
        t = (torch.floor(t * process.N) + 0.25 + 0.5 * torch.rand(n, generator=generator, dtype=F64)) / process.N
    return t


def test_registry_errors_list_valid_names():
    with pytest.raises(LdcodecError, match="ddpm, subvp, ve, vp"):
        make_process("edm")
    with pytest.raises(LdcodecError, match="VPSDE"):
        make_process("vp", beta=3.0)
    with pytest.raises(LdcodecError, match="cosine, linear"):
        make_process("ddpm", schedule="sigmoid")
    assert set(PROCESSES) == {"vp", "subvp", "ve", "ddpm"}


def test_config_rebuilds_process(process):
    rebuilt = make_process(**process.config())
    t = torch.linspace(0.0, 1.0, 11, dtype=F64)
    assert rebuilt.config() == process.config()
    assert torch.equal(rebuilt.log_snr(t), process.log_snr(t))


def test_log_snr_is_decreasing_and_inverted(process):
    t = torch.linspace(process.t_min, 1.0, 257, dtype=F64)
    lam = process.log_snr(t)
    assert (lam[1:] < lam[:-1]).all()
    torch.testing.assert_close(process.t_from_log_snr(lam), t, atol=1e-9, rtol=0)


def test_log_snr_inverse_in_float32(process):
    # Losses draw t from lambda in the latents' dtype: the inverse must hold in float32 up to t_min.
    t = torch.tensor([process.t_min, 0.01, 0.5, 1.0], dtype=torch.float32)
    torch.testing.assert_close(process.t_from_log_snr(process.log_snr(t)), t, rtol=2e-3, atol=1e-7)


def test_float64_precision_at_small_t():
    # sigma_t^2 ~ beta_min t: a naive 1 - alpha^2 in float32 would lose every digit at t = 1e-7.
    vp = make_process("vp")
    _, sigma = vp.alpha_sigma(torch.tensor([1e-7], dtype=torch.float32))
    assert sigma.dtype == torch.float32
    assert sigma.item() == pytest.approx(math.sqrt(0.1 * 1e-7), rel=1e-4)


def test_alpha_sigma_endpoints():
    t = torch.tensor([0.0, 1.0], dtype=F64)
    for name in ("vp", "subvp", "ddpm"):
        alpha, sigma = make_process(name).alpha_sigma(t)
        assert alpha[0] == 1.0 and sigma[0] == 0.0
        assert alpha[1] < 0.01 and sigma[1] > 0.99
    alpha, sigma = make_process("ve", sigma_min=0.01, sigma_max=50.0).alpha_sigma(t)
    torch.testing.assert_close(alpha, torch.ones(2, dtype=F64))
    torch.testing.assert_close(sigma, torch.tensor([0.01, 50.0], dtype=F64))


def test_sde_coefficients_match_the_marginals(process):
    # f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2 (linear SDE), checked by finite differences.
    t = off_grid_times(process, 64, torch.Generator().manual_seed(0))
    h = 1e-6 if process.continuous else 1e-3 / process.N
    f, g2 = process.f_g2(t)
    (la_p, ls_p), (la_m, ls_m) = process.log_alpha_sigma(t + h), process.log_alpha_sigma(t - h)
    _, log_sigma = process.log_alpha_sigma(t)
    torch.testing.assert_close(f, (la_p - la_m) / (2 * h), rtol=1e-5, atol=1e-5)
    dvar = (torch.exp(2 * ls_p) - torch.exp(2 * ls_m)) / (2 * h)
    torch.testing.assert_close(g2, dvar - 2 * f * torch.exp(2 * log_sigma), rtol=1e-4, atol=1e-6)
    w = process.likelihood_weight(t)
    torch.testing.assert_close(w, -(process.log_snr(t + h) - process.log_snr(t - h)) / (2 * h), rtol=1e-4, atol=1e-6)
    z = torch.randn(64, 3, dtype=F64)
    drift, g = process.drift_diffusion(z, t)
    torch.testing.assert_close(drift, f[:, None] * z)
    torch.testing.assert_close(g, g2.sqrt())


def test_transitions_compose_to_the_marginal(process):
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(100, generator=gen, dtype=F64), torch.rand(100, generator=gen, dtype=F64)
    s, t = torch.minimum(a, b), torch.maximum(a, b)
    alpha_ts, var_ts = process.transition(t, s)
    (alpha_s, sigma_s), (alpha_t, sigma_t) = process.alpha_sigma(s), process.alpha_sigma(t)
    torch.testing.assert_close(alpha_ts * alpha_s, alpha_t)
    torch.testing.assert_close(var_ts + alpha_ts**2 * sigma_s**2, sigma_t**2)
    assert (var_ts >= 0).all()


def test_posterior_matches_brute_force_sde_simulation(process):
    """Simulate z_s ~ q(z_s|z0), then the SDE from s to t by Euler-Maruyama (independent of the
    closed-form transition), and regress z_s on z_t: slope, intercept and residual variance are
    the posterior's ``(mean coefficients, var)``."""
    gen = torch.Generator().manual_seed(2)
    n, steps = 20000, 200
    s, t = 0.2, 0.6
    z0 = torch.full((n, 1), 0.7, dtype=F64)
    z = process.marginal(z0, torch.full((n,), s, dtype=F64), torch.randn(n, 1, generator=gen, dtype=F64))
    z_s = z.clone()
    grid = torch.linspace(s, t, steps + 1, dtype=F64)
    for u0, u1 in zip(grid[:-1], grid[1:]):
        drift, g = process.drift_diffusion(z, torch.full((n,), float(0.5 * (u0 + u1)), dtype=F64))
        z = z + drift * (u1 - u0) + g[:, None] * (u1 - u0).sqrt() * torch.randn(n, 1, generator=gen, dtype=F64)
    design = torch.cat([z, torch.ones_like(z)], dim=1)
    coef = torch.linalg.lstsq(design, z_s).solution[:, 0]
    resid_var = (z_s[:, 0] - design @ coef).var()
    tt, ss = torch.full((1,), t, dtype=F64), torch.full((1,), s, dtype=F64)
    # The posterior mean is linear in z_t: read its slope and intercept off two evaluations.
    mean0, var = process.posterior(torch.zeros(1, 1, dtype=F64), z0[:1], tt, ss)
    mean1, _ = process.posterior(torch.ones(1, 1, dtype=F64), z0[:1], tt, ss)
    slope, intercept = (mean1 - mean0).item(), mean0.item()
    _, sigma_t = process.alpha_sigma(tt)
    assert coef[0].item() == pytest.approx(slope, abs=0.02)
    assert coef[1].item() == pytest.approx(intercept, abs=0.03 * max(1.0, sigma_t.item()))
    assert resid_var.item() == pytest.approx(var.item(), rel=0.05)


def test_posterior_on_every_pair_of_a_ddpm_grid():
    ddpm = DiscreteVP(N=20)
    i = torch.arange(21, dtype=F64)
    t, s = torch.meshgrid(i / 20, i / 20, indexing="ij")
    keep = s < t
    t, s = t[keep], s[keep]
    z0 = torch.randn(t.numel(), 4, dtype=F64)
    z_t = ddpm.marginal(z0, t, torch.randn_like(z0))
    mean, var = ddpm.posterior(z_t, z0, t, s)
    _, sigma_s = ddpm.alpha_sigma(s)
    assert torch.isfinite(mean).all() and (var >= 0).all() and (var <= sigma_s**2 + 1e-12).all()
    at_zero = s == 0  # q(z_0 | z_t, z0) is the point mass at z0
    torch.testing.assert_close(mean[at_zero], z0[at_zero])
    assert (var[at_zero] == 0).all()


def test_ddpm_linear_betas_are_ho_et_al():
    ddpm = DiscreteVP(N=1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    i = torch.tensor([1, 10, 500, 1000])
    alpha, sigma = ddpm.alpha_sigma(i.to(F64) / 1000)
    torch.testing.assert_close(alpha**2, alpha_bar[i - 1])
    torch.testing.assert_close(sigma**2, 1 - alpha_bar[i - 1])
    # A step down from t = i/N uses beta_i: g^2 = -N log(1 - beta_i).
    _, g2 = ddpm.f_g2(i.to(F64) / 1000)
    torch.testing.assert_close(g2, -1000 * torch.log1p(-betas[i - 1]))
    assert ddpm.t_min == 1e-3 and not ddpm.continuous


def test_prior_logp_and_kl_match_torch_distributions(process):
    z = torch.randn(8, 2, 3, dtype=F64) * 3
    ref = torch.distributions.Normal(0.0, process.prior_std).log_prob(z).sum(dim=(1, 2))
    torch.testing.assert_close(process.prior_logp(z), ref)
    alpha, sigma = process.alpha_sigma(torch.ones(8, dtype=F64))
    q = torch.distributions.Normal(alpha[:, None, None] * z, sigma[:, None, None])
    p = torch.distributions.Normal(0.0, process.prior_std)
    torch.testing.assert_close(process.prior_kl(z), torch.distributions.kl_divergence(q, p).sum(dim=(1, 2)))
    sample = process.prior_sample((20000, 2), generator=torch.Generator().manual_seed(3), dtype=F64)
    assert sample.std().item() == pytest.approx(process.prior_std, rel=0.03)


@pytest.mark.parametrize("shape", [(6, 5), (6, 2, 3, 3)], ids=["vector", "spatial"])
def test_eps_converts_to_z0_and_to_the_exact_score(process, shape):
    # z_t = alpha z0 + sigma eps: eps gives back z0, and -eps / sigma is grad log N(z_t; alpha z0, sigma^2) by autograd.
    t = torch.linspace(0.05, 0.95, shape[0], dtype=F64)
    z0, eps = torch.randn(shape, dtype=F64), torch.randn(shape, dtype=F64)
    z_t = process.marginal(z0, t, eps).requires_grad_(True)
    torch.testing.assert_close(process.eps_to_z0(z_t.detach(), t, eps), z0)
    alpha, sigma = (v.reshape(-1, *[1] * (len(shape) - 1)) for v in process.alpha_sigma(t))
    (score,) = torch.autograd.grad(torch.distributions.Normal(alpha * z0, sigma).log_prob(z_t).sum(), z_t)
    torch.testing.assert_close(process.eps_to_score(z_t.detach(), t, eps), score)


def test_gaussian_eps_is_minus_sigma_times_the_exact_score(process):
    # eps(z_t) = -sigma_t grad log N(z_t; alpha m, alpha^2 s^2 + sigma^2), by autograd.
    m, s = torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([0.5, 2.0], dtype=F64)
    t = torch.linspace(0.01, 1.0, 7, dtype=F64)
    alpha, sigma = process.alpha_sigma(t)
    z = torch.randn(7, 2, dtype=F64, requires_grad=True)
    std = torch.sqrt(alpha[:, None] ** 2 * s**2 + sigma[:, None] ** 2)
    logp = torch.distributions.Normal(alpha[:, None] * m, std).log_prob(z).sum()
    (score,) = torch.autograd.grad(logp, z)
    torch.testing.assert_close(process.gaussian_eps(z.detach(), t, m, s), -sigma[:, None] * score)


def test_bad_arguments_raise():
    with pytest.raises(LdcodecError):
        make_process("vp", t_min=0.0)
    with pytest.raises(LdcodecError):
        make_process("ve", sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(LdcodecError):
        make_process("ddpm", N=1)
