"""Mode C (CDC, Yang & Mandt 2023): the ``cdc`` codec of conditional LSGM models.

Two tiny trained mode C cells (``conftest.CELLS``: an MLP with a delta latent on the score SDE, a
CNN with a Gaussian latent on DDPM). Round trips, bit counting and damaged files are the contract
suite's (``test_codec_contract.py``); here: the code itself, its rate, and mode C's own refusals.
"""

from __future__ import annotations

import pytest
import torch

from ldcodec.checkpoint import load_model
from ldcodec.codecs import container, get_codec
from ldcodec.coding import range_coder
from ldcodec.codecs.cdc import CDCCodec
from ldcodec.data import load_split, to_tensor
from ldcodec.errors import LdcodecError

C_CELLS = ["mlp-C", "cnn-C"]


@pytest.fixture(scope="module")
def codecs(runs) -> dict[str, CDCCodec]:
    return {name: get_codec("cdc")(load_model(runs[name])[0]) for name in C_CELLS}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return to_tensor(load_split("mnist", "test", limit=8)[0])


@pytest.mark.parametrize("name", C_CELLS)
def test_the_code_round_trips_exactly(codecs, images, name):
    codec = codecs[name]
    model = codec.model
    with torch.no_grad():
        y = torch.round(model.code(model.ae.encode(images).mean))
    c = codec.compress(images)
    decoder = range_coder.decoder_from_trimmed(c.payload)  # one coder for the file, image after image
    assert torch.equal(model.code_density.read(decoder, len(images), tuple(y.shape[1:])), y)
    assert c.rate_setting == {"lambda": model.cfg.cond.lam}


@pytest.mark.parametrize("name", C_CELLS)
def test_actual_bits_match_the_estimate(codecs, images, name):
    """Actual = estimate + the container's share + one coder flush per file: under 1 % and 4 bytes
    above the estimate (a coder per image paid up to 32 bits more each)."""
    codec = codecs[name]
    c = codec.compress(images)
    actual = codec.actual_bits(c, codec.frame(c))
    estimate = c.estimated_bits.mean()
    assert estimate >= 100
    framing = 8 * container.file_bytes(0, len(c.params), len(images)) / len(images)
    excess = actual - (estimate + framing)
    assert -0.01 * estimate <= excess <= 0.01 * estimate + 32 / len(images)
    # the estimate is the coder's own information content: the payload cannot be much shorter
    assert 8 * len(c.payload) >= c.estimated_bits.sum() - 16


@pytest.mark.parametrize("name", C_CELLS)
def test_the_stored_decode_is_a_default_the_decoder_may_override(codecs, images, name):
    codec = codecs[name]
    files = {d: codec.frame(codec.compress(images[:4], {"decode": d})) for d in codec.decodes}
    flow = files["flow"]
    for decode, data in files.items():
        assert container.read(data)[3] == container.read(flow)[3]  # the payload does not depend on it
        y = codec.decompress_file(data)
        assert torch.equal(codec.decompress_file(flow, decode=decode), y)
        if decode != "flow":
            assert not torch.equal(codec.decompress_file(flow), y)


@pytest.mark.parametrize("name", C_CELLS)
def test_realism_decode_does_not_depend_on_the_batching(runs, codecs, images, name):
    """Each image's sampling noise is keyed by its own index in the stream, not by its batch."""
    data = codecs[name].frame(codecs[name].compress(images))
    model = codecs[name].model
    whole = CDCCodec(model, batch_size=len(images)).decompress_file(data, decode="realism")
    pieces = CDCCodec(model, batch_size=1).decompress_file(data, decode="realism")
    torch.testing.assert_close(whole, pieces, atol=1e-4, rtol=0)


def test_mode_c_refuses_mode_u_settings(codecs, images):
    codec = codecs["mlp-C"]
    for rate in ({"t_stop": 0.5}, {"bits": 200.0}, {"coding_steps": 4}):
        with pytest.raises(LdcodecError, match="mode C"):
            codec.compress(images[:2], rate)
    with pytest.raises(LdcodecError, match="trained for lambda"):
        codec.compress(images[:2], {"lambda": 123.0})
    with pytest.raises(LdcodecError, match="decode method"):
        codec.compress(images[:2], {"decode": "sharp"})
    data = codec.frame(codec.compress(images[:2]))
    with pytest.raises(LdcodecError, match="max_steps"):
        codec.decompress_file(data, max_steps=2)
    with pytest.raises(LdcodecError, match="decode method"):
        codec.decompress_file(data, decode="sharp")
