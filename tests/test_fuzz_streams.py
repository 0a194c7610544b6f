"""Smoke test of ``benchmarks/fuzz_streams.py``: its harness over hypothesis-mutated real streams of
both modes (runs everywhere), and a five-second atheris run where atheris is installed (``.[fuzz]``).
The long coverage-guided run and its numbers are in ``benchmarks/RESULTS.md``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "fuzz_streams.py"
spec = importlib.util.spec_from_file_location("fuzz_streams", SCRIPT)
fuzz_streams = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz_streams)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def harness(work):
    return fuzz_streams.Harness(fuzz_streams.build_runs(work / "runs"))


def test_seeds_decode_cleanly(harness):
    assert len(harness.seeds()) == 4
    for seed in harness.seeds():
        mode, stream = harness.stream_of(seed)
        assert stream == harness.streams[mode]  # a sealed seed rebuilds the real stream
        y = harness.codecs[mode].decompress_file(stream)
        assert y.shape == (fuzz_streams.IMAGES, 1, 28, 28)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 3), cut=st.integers(0, 2**16), flips=st.lists(st.integers(0, 2**20), max_size=3),
       insert=st.binary(max_size=6))
def test_mutated_seeds_give_images_or_ldcodec_errors(harness, seed, cut, flips, insert):
    data = bytearray(harness.seeds()[seed])
    for bit in flips:
        position = 1 + bit % (8 * (len(data) - 1))
        data[position // 8] ^= 1 << (position % 8)
    data = bytes(data[: 1 + cut % len(data)]) + insert
    harness(data)


def test_the_check_flags_what_it_must(harness, monkeypatch):
    codec, stream = harness.codecs["U"], harness.streams["U"]
    for bad in (lambda s: (_ for _ in ()).throw(ValueError("escaped")),
                lambda s: torch.full((2, 1, 28, 28), 1.5),
                lambda s: torch.zeros(2, 3, 28, 28)):
        monkeypatch.setattr(codec, "decompress_file", bad)
        with pytest.raises((ValueError, AssertionError)):
            fuzz_streams.check_decode(codec, stream)


def test_a_short_atheris_run_finds_nothing(harness, work):
    pytest.importorskip("atheris")
    out = work / "fuzz.json"
    subprocess.run([sys.executable, str(SCRIPT), "--seconds", "2", "--work", str(work), "--out", str(out)],
                   check=True, capture_output=True)
    result = json.loads(out.read_text())
    assert result["inputs_tried"] > 10 and result["findings"] == [] and result["child_exit_status"] == 0
