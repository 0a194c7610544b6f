"""Coverage-guided fuzzing of the stream decoder with atheris (libFuzzer) over mutated real streams.

    pip install -e ".[fuzz]"
    OMP_NUM_THREADS=1 python benchmarks/fuzz_streams.py [--seconds 180] [--out benchmarks/results/fuzz-streams.json]

Two tiny models are trained for a few steps on the built-in MNIST sample, one per mode (U:
DiffC with reverse channel coding, C: the conditional decoder's entropy-coded code). Real
format 2 files of two test images each, made through the public API
(``codec.frame(codec.compress(x, rate))`` of the registered codecs), seed libFuzzer's corpus.
The first byte of every fuzzer input picks the model (bit 0) and what the rest is (bit 1):

- raw: the whole file, so the container's fields and its checksum are fuzzed;
- sealed: the file's payload, framed again with the seed's parameters behind a fresh checksum
  (``codecs.container.write``), so the damage reaches the range decoder and the PFR / density
  decoders.

The property checked on each input (:func:`check_decode`): ``codec.decompress_file`` returns images
``(N, C, H, W)``, finite and in [0, 1], or raises ``LdcodecError`` with a one-line message.
Any other exception is a finding (libFuzzer saves the input as ``crash-*``), and so is an input
that runs longer than ``--timeout`` seconds or a process above ``--rss-mb`` MiB. The run's
numbers (inputs tried, seconds, coverage, findings with their input bytes as hex and the
traceback) go to ``--out`` as JSON.

The fuzzing runs in a child process (libFuzzer ends its process when the time is up); the
parent trains the models, writes the seed corpus and reads the child's final statistics.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CELLS = {"U": "mnist-mlp-ddpm-uncond-gauss", "C": "mnist-mlp-sde-cond-delta"}
MODES = tuple(CELLS)
# Test-sized models (as in tests/conftest.py): a few training steps take about two seconds each.
TINY = ["model.hidden=64", "model.depth=1", "model.latent_dim=8", "diffusion.hidden=64", "diffusion.depth=2",
        "diffusion.num_steps=100", "cond.code_dim=16", "train.batch_size=16", "train.warmup=2",
        "train.log_every=1", "train.ckpt_every=1000", "train.steps=3"]
IMAGES = 2  # images per seed stream
T = 0.5  # mode U stop time of the seed streams
REPO = Path(__file__).resolve().parents[1]


def build_runs(root: Path) -> dict[str, Path]:
    """Train one tiny model per mode into ``root/<mode>`` -> run folders."""
    from ldcodec.config import load_config
    from ldcodec.train import train

    runs = {}
    for mode, cell in CELLS.items():
        runs[mode] = root / mode
        if not (runs[mode] / "latest").exists():
            train(load_config(REPO / "configs" / "grid" / f"{cell}.yaml", TINY), runs[mode], progress=False)
    return runs


def check_decode(codec, stream: bytes) -> None:
    """Decoding returns valid images or raises a one-line ``LdcodecError``; anything else fails."""
    import torch

    from ldcodec.errors import LdcodecError

    try:
        y = codec.decompress_file(stream)
    except LdcodecError as e:
        if not str(e) or "\n" in str(e):
            raise AssertionError(f"error message is not one line: {str(e)!r}") from e
        return
    c, h, w = codec.image_shape
    if not (isinstance(y, torch.Tensor) and y.dim() == 4 and tuple(y.shape[1:]) == (c, h, w)):
        raise AssertionError(f"decoded {type(y).__name__} of shape {getattr(y, 'shape', None)}, not (N, {c}, {h}, {w})")
    if not (torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1):
        raise AssertionError("decoded images are not finite values in [0, 1]")


class Harness:
    """The fuzz target over the models of ``runs`` (see the module docstring for the input layout)."""

    def __init__(self, runs: dict[str, Path]):
        from ldcodec.checkpoint import load_model
        from ldcodec.codecs import model_codec
        from ldcodec.data import load_split, to_tensor

        x = to_tensor(load_split("mnist", "test", limit=IMAGES)[0])
        self.codecs = {mode: model_codec(load_model(runs[mode])[0], runs[mode]) for mode in MODES}
        self.streams = {mode: codec.frame(codec.compress(x, {"t_stop": T} if mode == "U" else None))
                        for mode, codec in self.codecs.items()}

    def seal(self, mode: str, payload: bytes) -> bytes:
        """The seed file of ``mode`` with its payload replaced, behind a valid checksum."""
        from ldcodec.codecs import container

        codec_id, model_id, params, _, count = container.read(self.streams[mode])
        return container.write(codec_id, model_id, params, payload, count)

    def stream_of(self, data: bytes) -> tuple[str, bytes]:
        """Fuzzer input -> (mode, stream to decode)."""
        mode = MODES[data[0] % 2]
        if data[0] & 2:
            return mode, self.seal(mode, data[1:])
        return mode, data[1:]

    def seeds(self) -> list[bytes]:
        """The seed corpus: each mode's real file raw, and its payload to be sealed."""
        out = []
        for i, mode in enumerate(MODES):
            out.append(bytes([i]) + self.streams[mode])
            out.append(bytes([i | 2]) + self._payload(mode))
        return out

    def _payload(self, mode: str) -> bytes:
        from ldcodec.codecs import container

        return container.read(self.streams[mode])[3]

    def __call__(self, data: bytes) -> None:
        if data:
            mode, stream = self.stream_of(data)
            check_decode(self.codecs[mode], stream)


def worker(runs: Path, libfuzzer_args: list[str]) -> None:
    """Child process: instrument ldcodec for coverage, then fuzz until libFuzzer stops."""
    import atheris
    import constriction  # noqa: F401  (imported before instrumenting: only ldcodec is instrumented)
    import numpy  # noqa: F401
    import torch

    torch.set_num_threads(1)
    with atheris.instrument_imports(include=["ldcodec"]):
        import ldcodec.codecs  # noqa: F401
        import ldcodec.coding.range_coder  # noqa: F401
        import ldcodec.coding.pfr  # noqa: F401
    harness = Harness({mode: runs / mode for mode in MODES})
    atheris.Setup([sys.argv[0], *libfuzzer_args], harness)
    atheris.Fuzz()


def _last_int(pattern: str, text: str) -> int | None:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else None


def fuzz(seconds: int, timeout: int, rss_mb: int, work: Path) -> dict:
    """Train, seed, run the child for ``seconds`` and summarise what libFuzzer reported."""
    import atheris  # noqa: F401  (fail early, with the install hint, if it is missing)

    runs = build_runs(work / "runs")
    corpus, artifacts = work / "corpus", work / "artifacts"
    corpus.mkdir(exist_ok=True)
    artifacts.mkdir(exist_ok=True)
    harness = Harness(runs)
    for i, seed in enumerate(harness.seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    args = [str(corpus), f"-max_total_time={seconds}", f"-timeout={timeout}", f"-rss_limit_mb={rss_mb}",
            f"-artifact_prefix={artifacts}/", "-print_final_stats=1", "-max_len=4096"]
    start = time.perf_counter()
    child = subprocess.run([sys.executable, __file__, "--worker", str(work / "runs"), "--", *args],
                           capture_output=True, text=True)
    wall = time.perf_counter() - start
    log = child.stderr
    (work / "libfuzzer.log").write_text(log)
    findings = [{"file": f.name, "input_hex": f.read_bytes().hex()} for f in sorted(artifacts.iterdir())]
    if findings:
        tail = log[log.find("=== Uncaught Python exception"):] if "Uncaught Python exception" in log else log[-4000:]
        findings[0]["report"] = tail[:6000]
    return {
        "tool": "atheris (libFuzzer)", "atheris": _version("atheris"), "seconds_requested": seconds,
        "wall_seconds": round(wall, 1), "child_exit_status": child.returncode,
        "inputs_tried": _last_int(r"stat::number_of_executed_units:\s*(\d+)", log),
        "inputs_per_second": _last_int(r"stat::average_exec_per_sec:\s*(\d+)", log),
        "coverage_edges": _last_int(r"cov: (\d+)", log), "features": _last_int(r"ft: (\d+)", log),
        "corpus_inputs": _last_int(r"corp: (\d+)", log), "peak_rss_mb": _last_int(r"stat::peak_rss_mb:\s*(\d+)", log),
        "seeds": len(harness.seeds()), "sealed_inputs": True, "cells": CELLS,
        "findings": findings, "machine": f"{platform.machine()}, {platform.python_version()}",
        "command": " ".join(["python", "benchmarks/fuzz_streams.py", "--seconds", str(seconds)]),
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        return worker(Path(sys.argv[2]), sys.argv[4:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=180, help="fuzzing time")
    p.add_argument("--timeout", type=int, default=30, help="seconds one input may take before it counts as a hang")
    p.add_argument("--rss-mb", type=int, default=4096, help="memory limit of the fuzzing process")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fuzz-streams.json"))
    p.add_argument("--work", help="folder for the models, corpus and crash files (default: a temporary one)")
    a = p.parse_args()
    try:
        import atheris  # noqa: F401
    except ImportError:
        sys.exit("fuzz_streams.py needs atheris: pip install -e '.[fuzz]'")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = fuzz(a.seconds, a.timeout, a.rss_mb, work)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "findings"}, indent=1))
    print(f"{len(result['findings'])} finding(s); written to {a.out}")


if __name__ == "__main__":
    main()
