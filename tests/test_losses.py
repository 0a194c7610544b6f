"""Cross-entropy bound and ODE likelihood against closed forms for Gaussian latents; training."""

import math

import pytest
import torch
import torch.nn.functional as F

from ldcodec.diffusion.likelihood import bits_per_dim, ode_nll
from ldcodec.diffusion.losses import cross_entropy
from ldcodec.diffusion.prior import DiffusionPrior
from ldcodec.diffusion.processes import make_process
from ldcodec.errors import LdcodecError
from ldcodec.diffusion.gaussian import GaussianDenoiser
from ldcodec.nets.denoisers import MLPDenoiser

F64 = torch.float64
PROCESSES = {"vp": {}, "subvp": {}, "ve": {}, "ddpm": {"N": 1000}, "ddpm-cosine": {"N": 1000, "schedule": "cosine"}}
SHAPES = {"vector": (2,), "spatial": (2, 2, 2)}
CHUNK = 2048  # samples per call


def build(name):
    return make_process("ddpm" if name.startswith("ddpm") else name, **PROCESSES[name])


def gaussian_prior(process, shape):
    """Prior with the exact eps of data N(m, diag(s^2)); returns (prior, m, s)."""
    n = torch.Size(shape).numel()
    m = torch.linspace(-1.0, 1.5, n, dtype=F64).reshape(shape)
    s = torch.linspace(0.4, 1.6, n, dtype=F64).flip(0).reshape(shape)
    return DiffusionPrior(process, GaussianDenoiser(process, m, s), shape, mixed=False), m, s


def gaussian_entropy(s):
    """E[-log N(z0; m, s^2)] = sum(log s) + d/2 log(2 pi e), nats."""
    return (torch.log(s).sum() + 0.5 * s.numel() * math.log(2 * math.pi * math.e)).item()


def expected_bound(process, m, s):
    """The exact E[bound] under the exact score: E||eps - E[eps|z_t]||^2 = sum sigmoid(lambda + log s^2)
    per dimension, integrated over lambda (continuous) or summed over the steps (DDPM)."""
    ends = torch.tensor([1.0, process.t_min], dtype=F64)
    lam_min, lam_max = process.log_snr(ends)
    log_s2 = torch.log(s.reshape(-1) ** 2)
    if process.continuous:
        diffusion = 0.5 * (F.softplus(lam_max + log_s2) - F.softplus(lam_min + log_s2)).sum()
    else:
        lam = process.grid_log_snr()
        c = torch.expm1(lam[1:-1] - lam[2:])
        diffusion = 0.5 * (c[:, None] * torch.sigmoid(lam[2:, None] + log_s2)).sum()
    alpha, sigma = process.alpha_sigma(torch.ones(1, dtype=F64))
    var_ratio = sigma**2 / process.prior_std**2
    quad = alpha**2 * (m**2 + s**2) / (2 * process.prior_std**2)
    prior_kl = (0.5 * (var_ratio - 1 - torch.log(var_ratio)) + quad).sum()
    recon = 0.5 * s.numel() * (math.log(2 * math.pi) + 1 - lam_max)
    return (diffusion + prior_kl + recon).item()


def mc_bound(prior, m, s, n_chunks, importance, seed=0):
    """Per-sample bound estimates over n_chunks * CHUNK data samples."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_chunks):
        z0 = m + s * torch.randn(CHUNK, *m.shape, generator=gen, dtype=F64)
        out.append(cross_entropy(prior, z0, importance=importance, generator=gen)["bound"])
    return torch.cat(out)


@pytest.mark.parametrize("importance", ["log_snr", "normal"])
@pytest.mark.parametrize("name", PROCESSES)
def test_bound_is_unbiased_and_bounds_the_true_nll(name, importance):
    process = build(name)
    prior, m, s = gaussian_prior(process, SHAPES["vector"])
    exact = expected_bound(process, m, s)
    entropy = gaussian_entropy(s)
    # The closed form is an upper bound on the data entropy: tight in continuous time, and for
    # DDPM loose by the sum of the per-step variance mismatches of the beta-tilde reverse process.
    gap_per_dim = (exact - entropy) / s.numel()
    assert gap_per_dim > 0
    assert gap_per_dim < (1e-3 if process.continuous else 0.5)
    # The Monte-Carlo estimate is unbiased for it.
    bound = mc_bound(prior, m, s, n_chunks=8, importance=importance)
    se = bound.std().item() / math.sqrt(bound.numel())
    mean = bound.mean().item()
    assert abs(mean - exact) < 4.5 * se, f"MC {mean:.3f} vs exact {exact:.3f} (se {se:.3f})"


@pytest.mark.parametrize("name", ["vp", "ddpm"])
def test_bound_on_spatial_latents(name):
    process = build(name)
    prior, m, s = gaussian_prior(process, SHAPES["spatial"])
    exact = expected_bound(process, m, s)
    bound = mc_bound(prior, m, s, n_chunks=4, importance="normal", seed=1)
    se = bound.std().item() / math.sqrt(bound.numel())
    assert abs(bound.mean().item() - exact) < 4.5 * se


def test_uniform_time_sampling_is_unbiased_too():
    process = build("ddpm")
    prior, m, s = gaussian_prior(process, SHAPES["vector"])
    bound = mc_bound(prior, m, s, n_chunks=8, importance="uniform", seed=2)
    se = bound.std().item() / math.sqrt(bound.numel())
    assert abs(bound.mean().item() - expected_bound(process, m, s)) < 4.5 * se


def test_importance_sampling_reduces_the_variance():
    process = build("vp")
    prior, m, s = gaussian_prior(process, SHAPES["vector"])
    std = {imp: mc_bound(prior, m, s, n_chunks=2, importance=imp).std().item()
           for imp in ("uniform", "log_snr", "normal")}
    assert std["normal"] < std["log_snr"] < std["uniform"]


def test_loss_terms_and_gradients():
    process = build("vp")
    prior = DiffusionPrior(process, MLPDenoiser(4, hidden=16, depth=1), (4,))
    z0 = torch.randn(32, 4, requires_grad=True)
    out = cross_entropy(prior, z0, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "bound", "diffusion", "prior_kl", "reconstruction"}
    assert all(v.shape == (32,) for v in out.values())
    torch.testing.assert_close(out["bound"], out["diffusion"] + out["prior_kl"] + out["reconstruction"])
    assert out["loss"] is out["bound"]
    out["loss"].mean().backward()
    assert z0.grad is not None and prior.mixing_logit.grad is not None
    assert all(p.grad is not None for p in prior.net.parameters() if p.requires_grad)


def test_unweighted_loss_is_the_simple_loss_and_bound_stays_the_bound():
    process = build("ddpm")
    prior, m, s = gaussian_prior(process, SHAPES["vector"])
    z0 = m + s * torch.randn(CHUNK, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    gen = torch.Generator().manual_seed(4)
    out = cross_entropy(prior, z0, weighting="unweighted", generator=gen)
    # With the exact eps, E||eps - eps_theta||^2 at step i is sum sigmoid(lambda_i + log s^2) < d.
    lam = process.grid_log_snr()[1:]
    expected = torch.sigmoid(lam[:, None] + torch.log(s**2)).sum(1).mean().item()
    assert out["loss"].mean().item() == pytest.approx(expected, abs=0.1)
    assert not torch.equal(out["loss"], out["bound"])
    se = out["bound"].std().item() / math.sqrt(CHUNK)
    assert abs(out["bound"].mean().item() - expected_bound(process, m, s)) < 4.5 * se


def test_bad_options_raise():
    prior, m, _ = gaussian_prior(build("vp"), SHAPES["vector"])
    z0 = m.expand(4, 2)
    with pytest.raises(LdcodecError, match="likelihood, unweighted"):
        cross_entropy(prior, z0, weighting="reweighted")
    with pytest.raises(LdcodecError, match="log_snr, normal, uniform"):
        cross_entropy(prior, z0, importance="stratified")


def test_training_a_small_mlp_denoiser_lowers_the_loss():
    torch.manual_seed(0)
    process = build("vp")
    prior = DiffusionPrior(process, MLPDenoiser(2, hidden=32, depth=1), (2,))
    m, s = torch.tensor([1.5, -1.0]), torch.tensor([0.5, 0.3])

    def data(n, gen):
        return m + s * torch.randn(n, 2, generator=gen)

    def evaluate():
        gen = torch.Generator().manual_seed(123)
        with torch.no_grad():
            out = cross_entropy(prior, data(CHUNK, gen), weighting="unweighted", generator=gen)
        return out["loss"].mean().item()

    before = evaluate()
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(7)
    for _ in range(100):
        loss = cross_entropy(prior, data(64, gen), weighting="unweighted", generator=gen)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert after < 0.7 * before, f"unweighted loss {before:.3f} -> {after:.3f}"


def model_nll(process, z0, m, s):
    """Exact -log p_model(z0) under the exact score: the probability-flow map of Gaussian data is
    per-dimension affine, z_1 = alpha_1 m + r_1 (z0 - m) / r_tmin with r_t = sqrt(alpha_t^2 s^2 + sigma_t^2),
    so log p(z0) = log N(z_1; 0, prior_std^2) + sum log(r_1 / r_tmin)."""
    alpha, sigma = process.alpha_sigma(torch.tensor([process.t_min, 1.0], dtype=F64))
    r_min, r_1 = (torch.sqrt(alpha[i] ** 2 * s**2 + sigma[i] ** 2) for i in (0, 1))
    z1 = alpha[1] * m + r_1 * (z0 - m) / r_min
    return -(process.prior_logp(z1) + torch.log(r_1 / r_min).sum())


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "ddpm"])
def test_ode_likelihood_matches_the_exact_gaussian_density(name, shape):
    process = build(name)
    prior, m, s = gaussian_prior(process, shape)
    z0 = m + s * torch.randn(64, *shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    nll = ode_nll(prior, z0, hutchinson=False)
    assert nll.shape == (64,)
    # DDPM's drift is piecewise constant (kinks at t = i/N), which costs the adaptive solver accuracy.
    torch.testing.assert_close(nll, model_nll(process, z0, m, s), atol=5e-4 if process.continuous else 5e-3, rtol=0)
    # The model differs from the data law only by p(z_1) != q(z_1) (e.g. alpha_1 = 0.007 for VP).
    data_nll = -torch.distributions.Normal(m, s).log_prob(z0).reshape(64, -1).sum(1)
    assert (nll - data_nll).abs().mean().item() < 0.1


class CoupledEps(torch.nn.Module):
    """A denoiser with a dense Jacobian, ``tanh(z W)``, where Hutchinson's estimate is noisy."""

    def __init__(self, dim):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(dim, dim, dtype=F64))

    def forward(self, z_t, t, cond=None, drop=None):
        return torch.tanh(z_t @ self.weight)


def test_hutchinson_trace_is_unbiased_for_a_dense_jacobian():
    torch.manual_seed(0)
    process = make_process("vp", t_min=1e-2)
    prior = DiffusionPrior(process, CoupledEps(3), (3,), mixing_logit_init=0.0).double()
    z0 = torch.randn(4, 3, dtype=F64)
    exact = ode_nll(prior, z0, hutchinson=False, rtol=1e-4, atol=1e-4)
    gen = torch.Generator().manual_seed(6)
    draws = torch.stack([ode_nll(prior, z0, generator=gen, rtol=1e-4, atol=1e-4) for _ in range(24)])
    assert draws.std(0).min() > 1e-3  # the estimator is noisy here ...
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - exact).abs() < 4.5 * se).all()  # ... and unbiased


def test_bits_per_dim():
    assert bits_per_dim(math.log(2) * 10, 5) == pytest.approx(2.0)
    torch.testing.assert_close(bits_per_dim(torch.tensor([0.0, 784 * math.log(2)]), 784), torch.tensor([0.0, 1.0]))
