"""``ldcodec sweep``: per-cell result files, skipping finished cells, rerunning changed ones, recording
failures without stopping, resuming interrupted training, and the effects table."""

import csv
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from ldcodec import sweep as sw
from ldcodec.cli import main
from ldcodec.grid_effects import effects, effects_rows, pair_effect
from ldcodec.results import validate_results
from ldcodec.sweep_summary import headline_rows
from ldcodec.train import train

from conftest import REPO, tiny_config

# A tiny protocol: 32 test images, two bit budgets, FID only.
PROTOCOL = sw.Protocol(limit=32, bits={"mnist": (32, 64)}, perception=("fid",), critic_steps=10)
U_CELL, C_CELL = "mnist-mlp-ddpm-uncond-gauss", "mnist-mlp-sde-cond-delta"


def cells(*specs) -> list[sw.Cell]:
    """``(grid cell, extra overrides...)`` -> tiny sweep cells."""
    out = []
    for name, *extra in specs:
        cfg = tiny_config(REPO / "configs" / "grid" / f"{name}.yaml", *extra)
        out.append(sw.Cell(cfg.name, cfg, PROTOCOL.for_cell(cfg)))
    return out


@pytest.fixture
def counted(monkeypatch) -> list[str]:
    """The cells that ``run_cell`` trains and evaluates, in order."""
    calls = []
    real = sw.run_cell

    def run_cell(cell, *args, **kwargs):
        calls.append(cell.name)
        return real(cell, *args, **kwargs)

    monkeypatch.setattr(sw, "run_cell", run_cell)
    return calls


def run(cell_list, out, **kwargs):
    return sw.sweep(cell_list, out, PROTOCOL, known=kwargs.pop("known", None), progress=False, log=lambda s: None,
                    **kwargs)


def test_sweep_writes_cells_and_summary_then_skips_finished_cells(tmp_path, counted):
    two = cells((U_CELL,), (C_CELL,))
    results = run(two, tmp_path / "s", note="tiny test budget")
    assert counted == [U_CELL, C_CELL] and [r["status"] for r in results] == ["ok", "ok"]
    for cell, r in zip(two, results):
        path = tmp_path / "s" / "cells" / f"{cell.key}.json"
        assert json.loads(path.read_text()) == r and r["hash"] == cell.hash and r["note"] == "tiny test budget"
        validate_results(r["results"], str(path))
        assert r["training"]["steps"] == 10 and r["training"]["start_step"] == 0 and r["training"]["seconds"] > 0
        assert "CPU cores" in r["training"]["machine"] and r["evaluation_seconds"] > 0
        assert r["results"]["images"] == 32 and r["results"]["split"] == "test"
    u, c = (r["results"]["points"] for r in results)
    assert [p["decode"] for p in u] == ["flow", "realism", "mse"] * 2 and {p["mode"] for p in u} == {"U"}
    assert [p["decode"] for p in c] == ["flow", "realism", "mse"] and {p["mode"] for p in c} == {"C"}
    assert [p["target_bits"] for p in u] == [32] * 3 + [64] * 3 and all("target_bits" not in p for p in c)
    assert all((p["recon_png"] is not None) == (p["decode"] == "realism") for p in u + c)
    mse = [p for p in u if p["decode"] == "mse"]
    assert mse[0]["bits_actual"] < mse[1]["bits_actual"]  # the 32- and 64-bit budgets, in order
    assert all(set(p["perception"]) == {"fid"} for p in u + c)
    with (tmp_path / "s" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and {r["cell"] for r in rows} == {U_CELL, C_CELL}
    text = (tmp_path / "s" / "summary.md").read_text()
    assert text.count("| ok |") == 2 and "## Effects of the four choices" in text
    assert "| mnist | mode | C vs U |" in text  # the one matched pair (these two cells differ in more)
    assert (tmp_path / "s" / "report.html").stat().st_size > 1000
    with Image.open(tmp_path / "s" / "rd-mnist.png") as figure:
        assert figure.format == "PNG" and figure.width > 800
    three = text.split("## Three operating points per cell")[1].split("## Operating points")[0]
    assert three.count(f"| {U_CELL} |") == 2 and three.count(f"| {C_CELL} |") == 1  # two budgets; one rung

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "s" / "cells").iterdir()}
    again = run(two, tmp_path / "s")
    assert counted == [U_CELL, C_CELL] and again == results  # nothing trained or evaluated again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "s" / "cells").iterdir()} == stamps

    changed = cells((U_CELL, "train.lr=0.002"), (C_CELL,))
    assert changed[0].hash != two[0].hash and changed[1].hash == two[1].hash
    run(changed, tmp_path / "s")
    assert counted == [U_CELL, C_CELL, U_CELL]  # only the changed cell reruns, into its own file
    assert (tmp_path / "s" / "cells" / f"{changed[0].key}.json").is_file()
    assert (tmp_path / "s" / "cells" / f"{two[0].key}.json").is_file()

    # A fresh sweep folder skips the cells found in a known (committed) folder.
    known = tmp_path / "known"
    shutil.copytree(tmp_path / "s" / "cells", known)
    fresh = run(two, tmp_path / "fresh", known=known)
    assert counted == [U_CELL, C_CELL, U_CELL] and fresh == results
    assert (tmp_path / "fresh" / "cells" / f"{two[1].key}.json").is_file()


def test_sweeps_side_by_side_summarise_each_others_cells(tmp_path, monkeypatch):
    """Two sweeps into one folder (one thread each): the summary written after a cell holds the cells the
    other sweep finished meanwhile, not only those finished when this sweep began."""
    u, c = cells((U_CELL,), (C_CELL,))
    first = run([u, c], tmp_path / "first", report=False)
    side = tmp_path / "side" / "cells"

    def beside(cell, out, *args):  # while u runs, the other sweep finishes c
        sw.write_json(side / f"{c.key}.json", first[1])
        return {k: first[0][k] for k in ("training", "evaluation_seconds", "results")}

    monkeypatch.setattr(sw, "run_cell", beside)
    run([u], tmp_path / "side", others=[u, c], report=False)
    text = (tmp_path / "side" / "summary.md").read_text()
    assert f"| {u.name} | {u.hash} | ok |" in text and f"| {c.name} | {c.hash} | ok |" in text


def test_headline_rows_pick_the_lowest_middle_and_highest_budget():
    def point(bits, decode, psnr):
        return {"codec": "diffc", "target_bits": bits, "rate_setting": {"bits": bits}, "decode": decode,
                "bits_actual": bits + 1.0, "bpp_actual": bits / 784, "psnr": psnr, "mse": 0.1, "accuracy": 0.9,
                "perception": {"fid": {"value": 3.0}, "f_js": {"value": 0.2}}}

    budgets = (32, 64, 128, 256, 512)
    r = {"cell": "x", "hash": "h", "note": "", "training": {"steps": 1, "seconds": 1.0, "machine": "m"},
         "results": {"dataset": "mnist", "noise_floor": {"fid": {"value": 1.5}, "f_js": {"value": 0.05}},
                     "points": [point(b, d, b / 10 + (d == "mse")) for b in budgets for d in ("realism", "mse")]}}
    rows = headline_rows(r)
    assert [row[1] for row in rows] == ["32", "128", "512"] and [row[3] for row in rows] == ["33.0", "129.0", "513.0"]
    assert rows[1][4:] == ["13.80", "12.80", "3.00 (1.50)", "0.200 (0.050)", "0.900"]  # mse, then realism


def test_changed_protocol_changes_the_hash(monkeypatch):
    monkeypatch.delenv("LDCODEC_DATA", raising=False)
    cfg = tiny_config(REPO / "configs" / "grid" / f"{U_CELL}.yaml")
    a = sw.Cell(cfg.name, cfg, PROTOCOL.for_cell(cfg))
    b = sw.Cell(cfg.name, cfg, sw.Protocol(limit=33, bits=PROTOCOL.bits, perception=("fid",),
                                           critic_steps=10).for_cell(cfg))
    assert a.hash != b.hash
    hashes = []
    for root in ("/data/here", "/data/elsewhere"):  # a machine's data folder is not part of the cell ...
        cfg.data.root = root
        hashes.append(sw.Cell(cfg.name, cfg, PROTOCOL.for_cell(cfg)).hash)
    assert hashes[0] == hashes[1] != a.hash  # ... but the built-in sample (no root, as in a) is not the shards


def test_failing_cell_is_recorded_and_the_next_still_runs(tmp_path, counted):
    # The N(0, I) prior trains, but mode U compression cannot use it: a real failure in evaluation.
    bad, good = cells((U_CELL, "model.prior=normal"), (U_CELL,))
    results = run([bad, good], tmp_path / "s")
    assert counted == [bad.name, good.name] and [r["status"] for r in results] == ["failed", "ok"]
    err = json.loads((tmp_path / "s" / "cells" / f"{bad.key}.json").read_text())["error"]
    kind, _, what = err["message"].partition(": ")
    assert kind.endswith("Error") and what and err["traceback"].splitlines()[-1].endswith(what)
    assert "model_codec" in err["traceback"] and len(err["traceback"].splitlines()) <= sw.TRACEBACK_LINES
    text = (tmp_path / "s" / "summary.md").read_text()
    assert f"| {bad.name} | {bad.hash} | failed |" in text and err["message"][:100] in text
    run([bad, good], tmp_path / "s")
    assert counted == [bad.name, good.name, bad.name]  # a failed cell is retried, a finished one is not


def test_interrupted_cell_resumes_from_its_checkpoint(tmp_path, counted, monkeypatch):
    (cell,) = cells((U_CELL, "train.steps=6", "train.ckpt_every=2"))
    run_dir = tmp_path / "s" / "runs" / cell.key
    train(tiny_config(REPO / "configs" / "grid" / f"{U_CELL}.yaml", "train.steps=2", "train.ckpt_every=2"),
          run_dir, progress=False)  # a sweep killed after the checkpoint at step 2

    def broken_report(results, path):
        raise ValueError("cannot draw")

    monkeypatch.setattr("ldcodec.report.render_report", broken_report)  # a report bug stops nothing
    lines = []
    (r,) = sw.sweep([cell], tmp_path / "s", PROTOCOL, known=None, progress=False, log=lines.append)
    assert lines[-1] == "sweep: warning: report.html or a figure not rewritten (ValueError: cannot draw)"
    assert lines[-2].startswith(f"sweep [1/1] {U_CELL}: ok in ") and (tmp_path / "s" / "summary.md").is_file()
    assert r["status"] == "ok" and r["training"]["start_step"] == 2 and r["training"]["steps"] == 6
    # per-image results (the effects' bootstrap) are kept for the mse decode alone, one per test image
    assert all(("per_image" in p) == (p["decode"] == "mse") for p in r["results"]["points"])
    assert all(len(p["per_image"]["psnr"]) == p["images"] for p in r["results"]["points"] if p["decode"] == "mse")
    assert (run_dir / "latest").read_text().strip() == "ckpt-00000006"
    launches = [json.loads(line) for line in (run_dir / "launches.jsonl").read_text().splitlines()]
    assert [entry["start_step"] for entry in launches] == [0, 2]


def fake_result(dataset, net, family, cond, latent, points) -> dict:
    """A finished cell result whose mse-decode curve is ``points`` = [(bits, psnr), ...]."""
    return {"config": {"data": {"dataset": dataset}, "model": {"net": net, "latent": latent},
                       "diffusion": {"family": family}, "cond": {"enabled": cond}},
            "results": {"points": [{"decode": "mse", "bits_actual": b, "psnr": q} for b, q in points]}}


def test_effects_are_means_over_matched_pairs():
    bits = [32, 64, 128, 256]
    curve = lambda offset: [(b, 3 * math.log2(b) + offset) for b in bits]  # noqa: E731
    results = [fake_result("mnist", "mlp", "sde", False, "gauss", curve(0)),
               fake_result("mnist", "mlp", "sde", False, "delta", curve(1)),  # +1 dB everywhere
               fake_result("mnist", "cnn", "sde", False, "gauss", curve(2)),
               fake_result("mnist", "cnn", "sde", False, "delta", curve(5)),  # +3 dB
               fake_result("mnist", "mlp", "sde", True, "gauss", [(100, 1.0)]),  # mode C, one point each:
               fake_result("mnist", "mlp", "sde", True, "delta", [(200, 2.0)])]  # no common range
    rows = {e["choice"]: e for e in effects(results)}
    latent = rows["latent"]
    assert (latent["matched"], latent["overlap"]) == (3, 2) and latent["dpsnr"] == pytest.approx(2.0)
    assert latent["dpsnr_range"] == pytest.approx((1.0, 3.0))
    # PSNR = 3 log2(bits) + c: +d dB at equal bits is a factor 2^(-d/3) in bits at equal PSNR.
    assert latent["dbits_pct"] == pytest.approx(100 * np.mean([2 ** (-1 / 3) - 1, 2 ** (-3 / 3) - 1]))
    net = rows["networks"]
    assert (net["matched"], net["overlap"]) == (2, 2) and net["dpsnr"] == pytest.approx(3.0)
    assert rows["diffusion"]["matched"] == 0 and rows["diffusion"]["dpsnr"] is None
    table = {row[1]: row for row in effects_rows(results)}
    assert table["latent"][3:5] == ["2 / 3", "+2.00 (+1.00 .. +3.00)"] and table["diffusion"][4] == ""
    mode = rows["mode"]  # the mode C point at 100 bits lies on the U curve's range: 3 log2(100) vs 1 dB
    assert mode["matched"] == 2 and mode["overlap"] == 2
    assert mode["dpsnr"] == pytest.approx(np.mean([1.0 - 3 * math.log2(100), 2.0 - (3 * math.log2(200) + 1)]))


def per_image_result(latent, shift, rng, n=300):
    """A finished cell (mnist, mlp, sde, mode U) whose mse points at 32/64/128 bits carry ``n``
    per-image PSNRs (noise of std 2 dB around 3 log2(bits) + ``shift``) and correctness flags."""
    points = []
    for bits in (32, 64, 128):
        psnr = 3 * math.log2(bits) + shift + rng.normal(0, 2.0, n)
        correct = (rng.random(n) < 0.5 + 0.02 * shift).astype(int)
        points.append({"decode": "mse", "bits_actual": float(bits), "psnr": float(psnr.mean()),
                       "accuracy": float(correct.mean()), "images": n,
                       "per_image": {"psnr": psnr.tolist(), "correct": correct.tolist(),
                                     "bits_estimated": (bits + rng.normal(0, 3, n)).tolist()}})
    r = fake_result("mnist", "mlp", "sde", False, latent, [])
    r["results"]["points"] = points
    return r


def test_bootstrap_interval_tells_an_effect_from_noise():
    """The paired bootstrap's 95 % interval holds 0 for two cells of the same curve (independent
    noise) and excludes it for a 1 dB shift; without per-image results there is no interval."""
    rng = np.random.default_rng(1)
    base = per_image_result("gauss", 0.0, rng)
    same = {e["choice"]: e for e in effects([base, per_image_result("delta", 0.0, rng)], boot=200)}["latent"]
    lo, hi = same["dpsnr_ci"]
    assert lo < 0 < hi and hi - lo < 1.0 and same["daccuracy_ci"][0] < 0 < same["daccuracy_ci"][1]
    moved = {e["choice"]: e for e in effects([base, per_image_result("delta", 1.0, rng)], boot=200)}["latent"]
    assert moved["dpsnr_ci"][0] > 0.5 and moved["dpsnr"] == pytest.approx(1.0, abs=0.3)
    assert moved["dbits_pct_ci"][1] < 0  # more PSNR at equal bits: fewer bits at equal PSNR
    row = {r[1]: r for r in effects_rows([base, per_image_result("delta", 0.0, rng)], boot=50)}["latent"]
    assert "no measurable effect" in row[4]
    for p in base["results"]["points"]:
        del p["per_image"]
    plain = {e["choice"]: e for e in effects([base, per_image_result("delta", 1.0, rng)], boot=50)}["latent"]
    assert plain["dpsnr_ci"] is None and plain["dpsnr"] is not None


def test_pair_effect_needs_a_common_range():
    a, b = np.array([[5.0, 10.0], [6.0, 12.0]]), np.array([[7.0, 20.0], [8.0, 22.0]])
    assert pair_effect(a, b) is None and pair_effect(a, np.zeros((0, 2))) is None
    assert pair_effect(a, a) == {"dpsnr": 0.0, "dbits": 0.0, "dbits_pct": 0.0}


def test_cli_sweep_help_and_bad_glob(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    assert "resuming an interrupted run" in capsys.readouterr().out
    assert main(["sweep", "--cells", "nosuch-*", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "matches no cell" in err and "mnist-mlp-ddpm-uncond-gauss" in err and not (tmp_path / "s").exists()


def test_cli_sweep_records_a_failure_and_exits_2(tmp_path, monkeypatch, capsys):
    def broken(cell, *args, **kwargs):
        raise RuntimeError(f"no luck with {cell.name}")

    monkeypatch.setattr(sw, "run_cell", broken)
    out = tmp_path / "s"
    assert main(["sweep", "--cells", "mnist-mlp-*-uncond-gauss", "--out", str(out), "--known", "none",
                 "--steps", "7", "--limit", "50", "--note", "test"]) == 2
    printed = capsys.readouterr()
    assert "2 cell(s) failed" in printed.err and "summary.csv: 0 of 2 cell(s) finished" in printed.out
    assert not (out / "report.html").exists()
    files = sorted((out / "cells").iterdir())
    assert [json.loads(f.read_text())["cell"] for f in files] == ["mnist-mlp-ddpm-uncond-gauss",
                                                                  "mnist-mlp-sde-uncond-gauss"]
    for f in files:
        r = json.loads(f.read_text())
        assert r["status"] == "failed" and r["error"]["message"] == f"RuntimeError: no luck with {r['cell']}"
        assert r["config"]["train"]["steps"] == 7 and r["protocol"]["limit"] == 50 and r["note"] == "test"
        assert r["protocol"]["bits"] == [32, 64, 128, 256, 512]
    assert (out / "summary.md").read_text().count("| failed |") == 2
