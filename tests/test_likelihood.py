"""``ldcodec likelihood``: the test-set negative ELBO and the ODE bound of a trained model, computed by
``ldcodec.diffusion.likelihood.checkpoint_likelihood`` (which ``benchmarks/elbo.py`` also calls)."""

from __future__ import annotations

import math
import re

import pytest

from ldcodec.cli import main
from ldcodec.diffusion.likelihood import checkpoint_likelihood

BOUND = re.compile(r"^(negative ELBO|ODE bound) .*: (\S+) \+- (\S+) bits/dim", re.M)


def bounds(capsys) -> dict[str, tuple[float, float]]:
    return {m[1]: (float(m[2]), float(m[3])) for m in BOUND.finditer(capsys.readouterr().out)}


@pytest.mark.parametrize("name", ["mlp-U", "mlp-C"])
def test_likelihood_prints_finite_bounds_that_the_library_computes(runs, capsys, name):
    assert main(["likelihood", str(runs[name]), "--limit", "8", "--draws", "2", "--ode"]) == 0
    found = bounds(capsys)
    assert set(found) == {"negative ELBO", "ODE bound"}
    assert all(math.isfinite(v) for pair in found.values() for v in pair)
    r = checkpoint_likelihood(str(runs[name]), limit=8, draws=2, ode=8)
    assert r["test_images"] == r["ode_images"] == 8 and r["mode"] == name[-1]
    assert found["negative ELBO"][0] == pytest.approx(r["neg_elbo_bpd"], abs=1e-4)  # seeded: the same numbers
    assert found["ODE bound"][0] == pytest.approx(r["neg_elbo_ode_bpd"], abs=1e-4)


def test_likelihood_without_ode_and_bad_limits(runs, capsys):
    assert main(["likelihood", str(runs["mlp-U"]), "--limit", "8", "--draws", "1"]) == 0
    assert set(bounds(capsys)) == {"negative ELBO"}
    assert main(["likelihood", str(runs["mlp-U"]), "--limit", "0"]) == 2
    assert main(["likelihood", "--limit", "8"]) == 2  # no checkpoint and no --model
