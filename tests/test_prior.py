"""The LSGM mixed-score prior: a = 0 is exactly N(0, I), a = 1 is the network; guidance."""

import math

import pytest
import torch

from ldcodec.diffusion.likelihood import ode_nll
from ldcodec.diffusion.losses import cross_entropy
from ldcodec.diffusion.prior import DiffusionPrior
from ldcodec.diffusion.processes import make_process
from ldcodec.diffusion.samplers import sample
from ldcodec.errors import LdcodecError
from ldcodec.diffusion.gaussian import GaussianDenoiser
from ldcodec.nets.denoisers import MLPDenoiser, UNetDenoiser

F64 = torch.float64
PROCESSES = {"vp": {}, "subvp": {}, "ve": {}, "ddpm": {"N": 1000}}


def random_net(shape, cond=0):
    """A denoiser of the latent shape whose (zero-initialised) output layer is made non-zero."""
    torch.manual_seed(0)
    if len(shape) == 1:
        net = MLPDenoiser(shape[0], hidden=16, depth=1, cond_dim=cond)
    else:
        net = UNetDenoiser(shape[0], base=8, mults=(1, 2), cond_channels=cond)
    torch.nn.init.normal_(net.out[-1].weight, std=0.5)
    torch.nn.init.normal_(net.out[-1].bias, std=0.5)
    return net


def set_mixing(prior, logit):
    with torch.no_grad():
        prior.mixing_logit.fill_(logit)


@pytest.mark.parametrize("shape", [(3,), (2, 4, 4)], ids=["vector", "spatial"])
@pytest.mark.parametrize("name", PROCESSES)
def test_mixing_weight_zero_one_and_half(name, shape):
    process = make_process(name, **PROCESSES[name])
    prior = DiffusionPrior(process, random_net(shape), shape)
    z, t = torch.randn(5, *shape), torch.linspace(0.05, 1.0, 5)
    net_eps = prior.net(z, t)
    normal_eps = process.gaussian_eps(z, t)  # sigma z / (alpha^2 + sigma^2)
    assert not torch.allclose(net_eps, normal_eps)
    set_mixing(prior, -math.inf)
    assert torch.equal(prior.eps(z, t), normal_eps)
    set_mixing(prior, math.inf)
    assert torch.equal(prior.eps(z, t), net_eps)
    set_mixing(prior, 0.0)
    torch.testing.assert_close(prior.eps(z, t), 0.5 * (net_eps + normal_eps))


def test_normal_eps_is_sigma_z_for_vp():
    process = make_process("vp")
    z, t = torch.randn(7, 4, dtype=F64), torch.linspace(0.0, 1.0, 7, dtype=F64)
    _, sigma = process.alpha_sigma(t)
    torch.testing.assert_close(process.gaussian_eps(z, t), sigma[:, None] * z)


@pytest.mark.parametrize("name", PROCESSES)
def test_zero_mixing_is_exactly_the_standard_normal_prior(name):
    """With a = 0, whatever the network says (here: exact eps of N(3, 0.2^2)), samples, ODE
    likelihood and the cross-entropy bound are those of N(0, I)."""
    process = make_process(name, **PROCESSES[name])
    shape = (2,)
    prior = DiffusionPrior(process, GaussianDenoiser(process, 3.0, 0.2), shape).double()
    set_mixing(prior, -math.inf)
    gen = torch.Generator().manual_seed(0)
    z1 = process.prior_sample((2048, *shape), generator=gen, dtype=F64)
    x = sample(prior, z1, 1.0, method="ddim", steps=100)
    assert (x.mean(0).abs() < 0.1).all() and ((x.std(0) - 1).abs() < 0.05).all()
    z0 = torch.randn(16, *shape, generator=gen, dtype=F64)
    normal_nll = -torch.distributions.Normal(0.0, 1.0).log_prob(z0).sum(1)
    torch.testing.assert_close(ode_nll(prior, z0, hutchinson=False), normal_nll, atol=0.02, rtol=0)
    bound = torch.cat([cross_entropy(prior, torch.randn(2048, *shape, generator=gen, dtype=F64),
                                     importance="normal", generator=gen)["bound"] for _ in range(4)])
    entropy = 0.5 * shape[0] * math.log(2 * math.pi * math.e)
    se = bound.std().item() / math.sqrt(bound.numel())
    gap = 1e-3 if process.continuous else 0.5  # per dimension; see test_losses for DDPM's looser bound
    assert entropy - 4.5 * se < bound.mean().item() < entropy + 4.5 * se + gap * shape[0]
    # ... and a = 1 gives the network's law instead.
    set_mixing(prior, math.inf)
    x = sample(prior, z1, 1.0, method="ddim", steps=100)
    assert ((x.mean(0) - 3.0).abs() < 0.02).all() and ((x.std(0) - 0.2).abs() < 0.02).all()


def test_mixing_logit_is_per_dimension_and_learned():
    shape = (2, 4, 4)
    prior = DiffusionPrior(make_process("vp"), random_net(shape), shape, mixing_logit_init=-3.0)
    assert prior.mixing_logit.shape == shape
    torch.testing.assert_close(prior.mixing(), torch.full(shape, torch.sigmoid(torch.tensor(-3.0)).item()))
    loss = cross_entropy(prior, torch.randn(4, *shape), generator=torch.Generator().manual_seed(0))["loss"].mean()
    loss.backward()
    assert prior.mixing_logit.grad.shape == shape and prior.mixing_logit.grad.abs().sum() > 0


def test_unmixed_prior_is_the_network():
    shape = (3,)
    prior = DiffusionPrior(make_process("ve"), random_net(shape), shape, mixed=False)
    z, t = torch.randn(4, 3), torch.rand(4)
    assert prior.mixing() is None and torch.equal(prior.eps(z, t), prior.net(z, t))
    assert "mixing_logit" not in dict(prior.named_parameters())


@pytest.mark.parametrize("shape,cond_shape", [((3,), (5,)), ((2, 7, 7), (3, 28, 28))], ids=["vector", "spatial"])
def test_classifier_free_guidance(shape, cond_shape):
    prior = DiffusionPrior(make_process("vp"), random_net(shape, cond=cond_shape[0]), shape)
    z, t, cond = torch.randn(4, *shape), torch.rand(4), torch.randn(4, *cond_shape)
    eps_cond, eps_null = prior.eps(z, t, cond), prior.eps(z, t)
    assert not torch.allclose(eps_cond, eps_null)
    torch.testing.assert_close(prior.eps_guided(z, t, cond, 0.0), eps_cond)
    torch.testing.assert_close(prior.eps_guided(z, t, cond, 2.5), 3.5 * eps_cond - 2.5 * eps_null)
    with pytest.raises(LdcodecError, match="condition"):
        prior.eps_guided(z, t, None, 1.0)


def test_latent_shape_mismatch_is_a_clear_error():
    prior = DiffusionPrior(make_process("vp"), random_net((3,)), (3,))
    with pytest.raises(LdcodecError, match="latent of shape"):
        prior.eps(torch.randn(2, 4), torch.rand(2))
