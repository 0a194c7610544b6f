"""The decode registry and its distortion-perception knob ``eta=X`` (DDIM's eta at decode time)."""

import pytest
import torch

from ldcodec.diffusion.decodes import DECODES, check_decode, decode_latent, knob_eta
from ldcodec.diffusion.processes import make_process
from ldcodec.errors import LdcodecError

from test_samplers import F64, gaussian_prior


@pytest.fixture(scope="module")
def setup():
    process = make_process("vp")
    prior, m, s = gaussian_prior(process, (3,))
    z_t = process.prior_sample((512, 3), generator=torch.Generator().manual_seed(0), dtype=F64) * 0.5
    return prior, z_t, torch.full((512,), 0.6, dtype=F64), m, s


def test_knob_names_parse_and_bad_ones_say_what_is_valid():
    assert knob_eta("eta=0.25") == 0.25 and knob_eta("eta=1") == 1.0 and knob_eta("flow") is None
    assert check_decode("eta=0.5", knob=True) == "eta=0.5"
    for bad in ("eta=1.5", "eta=-0.1", "eta=x", "eta=nan"):
        with pytest.raises(LdcodecError, match=r"eta must be a number in \[0, 1\]"):
            check_decode(bad, knob=True)
    with pytest.raises(LdcodecError, match="flow, realism, mse, eta=X"):
        check_decode("fancy", knob=True)
    with pytest.raises(LdcodecError, match="choose one of: flow, realism, mse$"):
        check_decode("eta=0.5")  # streams store only the named decodes
    assert "eta=0.5" not in DECODES


def test_eta_zero_is_the_flow_decode(setup):
    prior, z_t, t, _, _ = setup
    keys = list(range(len(z_t)))
    assert torch.equal(decode_latent(prior, z_t, t, "eta=0", None, keys), decode_latent(prior, z_t, t, "flow", None, keys))


def test_knob_moves_from_flow_to_a_sample_keyed_per_image(setup):
    """eta > 0 decodes are random but keyed per image (batch-independent); the spread of the decodes
    around the flow decode grows with eta, and eta = 1 has the posterior's spread, like realism."""
    prior, z_t, t, m, s = setup
    keys = list(range(len(z_t)))
    flow = decode_latent(prior, z_t, t, "flow", None, keys)
    spread = {}
    for eta in (0.25, 0.5, 1.0):
        z = decode_latent(prior, z_t, t, f"eta={eta}", None, keys)
        assert torch.equal(z[:7], decode_latent(prior, z_t[:7], t[:7], f"eta={eta}", None, keys[:7]))
        assert not torch.equal(z, decode_latent(prior, z_t, t, f"eta={eta}", None, [k + 1 for k in keys]))
        spread[eta] = (z - flow).square().mean().item()
    assert 0 < spread[0.25] < spread[0.5] < spread[1.0]
    realism = decode_latent(prior, z_t, t, "realism", None, keys)
    ratio = spread[1.0] / (realism - flow).square().mean().item()
    assert 0.8 < ratio < 1.25, ratio
