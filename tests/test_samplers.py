"""Samplers fed the exact score of Gaussian data reproduce the data law, from noise and mid-chain."""

import pytest
import torch

from ldcodec.diffusion.prior import DiffusionPrior
from ldcodec.diffusion.processes import make_process
from ldcodec.diffusion.samplers import SAMPLERS, denoise, sample, time_grid
from ldcodec.errors import LdcodecError
from ldcodec.diffusion.gaussian import GaussianDenoiser
from ldcodec.nets.denoisers import MLPDenoiser

F64 = torch.float64
PROCESSES = {"vp": {}, "subvp": {}, "ve": {}, "ddpm": {"N": 1000}}
# Both families on both latent ranks; sub-VP and VE on one rank each to keep the file fast.
CASES = [("vp", "vector"), ("vp", "spatial"), ("ddpm", "vector"), ("ddpm", "spatial"), ("subvp", "vector"),
         ("ve", "spatial")]
# (method, steps, options): steps (and the corrector's snr) keep the bias on the std below ~2.5%.
METHODS = [
    ("euler_maruyama", 300, {}),
    ("pc", 200, {"snr": 0.075}),
    ("ode", None, {"rtol": 1e-5, "atol": 1e-5}),
    ("ancestral", 400, {}),
    ("ddim", 200, {"eta": 0.0}),
]
SHAPES = {"vector": (2,), "spatial": (2, 2, 2)}
N = 2048  # samples per run


def gaussian_prior(process, shape):
    """Prior whose eps is exact for data N(m, diag(s^2)) of the latent shape; returns (prior, m, s)."""
    n = torch.Size(shape).numel()
    m = torch.linspace(-1.0, 1.5, n, dtype=F64).reshape(shape)
    s = torch.linspace(0.4, 1.6, n, dtype=F64).flip(0).reshape(shape)
    return DiffusionPrior(process, GaussianDenoiser(process, m, s), shape, mixed=False), m, s


def assert_gaussian_law(x, m, s, label):
    """Sample mean within 0.12 s, std within 7%, |correlations| below 0.1 (2048 samples: 5.4, 4.5
    standard errors for the mean, correlations; 4.5 minus the samplers' bias of <= 2.5% for the std)."""
    flat, mf, sf = x.reshape(x.shape[0], -1), m.reshape(-1), s.reshape(-1)
    mean_err = ((flat.mean(0) - mf) / sf).abs().max().item()
    std_err = (flat.std(0) / sf - 1).abs().max().item()
    corr = torch.corrcoef(flat.T) - torch.eye(flat.shape[1], dtype=flat.dtype)
    assert mean_err < 0.12, f"{label}: mean off by {mean_err:.3f} std units"
    assert std_err < 0.07, f"{label}: std off by {100 * std_err:.1f}%"
    assert corr.abs().max().item() < 0.1, f"{label}: spurious correlation {corr.abs().max().item():.3f}"


@pytest.mark.parametrize("method,steps,opts", METHODS, ids=[m[0] for m in METHODS])
@pytest.mark.parametrize("name,rank", CASES, ids=[f"{n}-{r}" for n, r in CASES])
def test_sampler_reproduces_gaussian_data(name, rank, method, steps, opts):
    """From pure noise at t = 1, and from z_t ~ q(z_t) at per-sample t_start in {0.3, 0.6}, the
    samples must be distributed as the data."""
    process, shape = make_process(name, **PROCESSES[name]), SHAPES[rank]
    prior, m, s = gaussian_prior(process, shape)
    gen = torch.Generator().manual_seed(0)
    noise = process.prior_sample((N, *shape), generator=gen, dtype=F64)
    out = sample(prior, noise, 1.0, method=method, steps=steps, generator=gen, **opts)
    assert out.shape == noise.shape and out.dtype == noise.dtype
    assert_gaussian_law(out, m, s, f"{name}/{method} from noise")
    t_mid = torch.where(torch.arange(N) % 2 == 0, 0.3, 0.6).to(F64)
    z0 = m + s * torch.randn(N, *shape, generator=gen, dtype=F64)
    z_t = process.marginal(z0, t_mid, torch.randn(z0.shape, generator=gen, dtype=F64))
    out = sample(prior, z_t, t_mid, method=method, steps=steps, generator=gen, **opts)
    assert_gaussian_law(out, m, s, f"{name}/{method} from mid-chain")


def test_full_ddpm_chain_on_a_coarse_discrete_process():
    """t_start = 1 and steps = N - 1 is exactly Ho et al.'s chain on t = i / N."""
    process = make_process("ddpm", N=100, schedule="cosine")
    prior, m, s = gaussian_prior(process, (2,))
    grid = time_grid(process, torch.ones(1, dtype=F64), torch.full((1,), 0.01, dtype=F64), 99)[:, 0]
    torch.testing.assert_close(grid, torch.arange(100, 0, -1, dtype=F64) / 100)
    gen = torch.Generator().manual_seed(1)
    z1 = process.prior_sample((N, 2), generator=gen, dtype=F64)
    assert_gaussian_law(sample(prior, z1, 1.0, method="ancestral", steps=99, generator=gen), m, s, "ddpm-100")
    # More steps than grid points give zero-length steps, never NaNs.
    assert torch.isfinite(sample(prior, z1, 1.0, method="euler_maruyama", steps=400, generator=gen)).all()


def test_ddim_with_eta_one_is_ancestral_sampling():
    process = make_process("vp")
    prior, _, _ = gaussian_prior(process, (2, 2, 2))
    z1 = process.prior_sample((64, 2, 2, 2), generator=torch.Generator().manual_seed(2), dtype=F64)
    a = sample(prior, z1, 1.0, method="ancestral", steps=20, generator=torch.Generator().manual_seed(3))
    b = sample(prior, z1, 1.0, method="ddim", steps=20, eta=1.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_denoise_is_the_posterior_mean():
    # For Gaussian data E[z0 | z_t] = m + alpha s^2 (z_t - alpha m) / (alpha^2 s^2 + sigma^2).
    process = make_process("subvp")
    prior, m, s = gaussian_prior(process, (2, 2, 2))
    t = torch.linspace(0.01, 1.0, 16, dtype=F64)
    z_t = torch.randn(16, 2, 2, 2, dtype=F64)
    alpha, sigma = (v[:, None, None, None] for v in process.alpha_sigma(t))
    expected = m + alpha * s**2 * (z_t - alpha * m) / (alpha**2 * s**2 + sigma**2)
    torch.testing.assert_close(denoise(prior, z_t, t), expected)


@pytest.mark.parametrize("method", ["euler_maruyama", "pc", "ancestral", "ddim"])
def test_seeded_sampling_is_reproducible_and_batch_independent(method):
    """A codec decodes the same way on any batch: same seed, same output; no coupling across samples."""
    process = make_process("vp")
    prior, _, _ = gaussian_prior(process, (3,))
    z1 = torch.randn(32, 3, dtype=F64)
    opts = {"eta": 0.5} if method == "ddim" else {}

    def run(z, seed):
        return sample(prior, z, 0.8, method=method, steps=10, generator=torch.Generator().manual_seed(seed), **opts)

    assert torch.equal(run(z1, 4), run(z1, 4))
    assert not torch.equal(run(z1, 4), run(z1, 5))
    det = sample(prior, z1, 0.8, method="ddim", steps=10)
    assert torch.equal(det[:5], sample(prior, z1[:5], 0.8, method="ddim", steps=10))


def test_guided_sampling_runs_with_a_conditional_network():
    process = make_process("ddpm", N=50)
    prior = DiffusionPrior(process, MLPDenoiser(4, hidden=16, depth=1, cond_dim=3), (4,))
    z = torch.randn(8, 4)
    cond = torch.randn(8, 3)
    for method in ("ddim", "pc", "ancestral"):
        out = sample(prior, z, 1.0, method=method, steps=5, cond=cond, guidance=2.0)
        assert out.shape == z.shape and torch.isfinite(out).all()
    with pytest.raises(LdcodecError, match="condition"):
        sample(prior, z, 1.0, method="ddim", steps=5, guidance=2.0)


def test_sampler_registry_and_argument_errors():
    process = make_process("vp")
    prior, _, _ = gaussian_prior(process, (2,))
    z = torch.randn(4, 2, dtype=F64)
    assert set(SAMPLERS) == {"euler_maruyama", "pc", "ode", "ancestral", "ddim"}
    with pytest.raises(LdcodecError, match="ancestral, ddim, euler_maruyama, ode, pc"):
        sample(prior, z, 1.0, method="heun", steps=5)
    with pytest.raises(LdcodecError, match="valid options: snr, n_corrector"):
        sample(prior, z, 1.0, method="pc", steps=5, eta=0.5)
    with pytest.raises(LdcodecError, match="steps"):
        sample(prior, z, 1.0, method="ancestral")
    with pytest.raises(LdcodecError, match="t_end <= t_start"):
        sample(prior, z, 0.1, method="ddim", steps=5, t_end=0.5)
    with pytest.raises(LdcodecError, match="eta"):
        sample(prior, z, 1.0, method="ddim", steps=5, eta=2.0)
