"""The HTML report: one self-contained page whose figures, strips and tables follow the results data."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
from collections import Counter
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from ldcodec.errors import LdcodecError
from ldcodec.metrics.gaussian_source import rate_distortion, rd_curve
from ldcodec.metrics.rate import rate_fields
from ldcodec.report import render_report
from ldcodec.results import SCHEMA, load_results, realism_ratios

MNIST_U = "mnist-mlp-ddpm-uncond-gauss"
MNIST_C = "mnist-cnn-sde-cond-delta"
GAUSS_MODEL = "gaussian-mlp-ddpm-uncond-gauss"
MNIST_ESTIMATORS = ("fid", "kid", "knn_kl", "f_kl", "f_js")
VARIANCES = [1.0, 0.5, 0.25, 0.125]
MACHINE = 'x86_64 <CPU> & "torch" 2.13'


def _png_b64(seed: int, h: int = 4, w: int = 32) -> str:
    """A tiny grayscale strip (8 images of 4x4 in a row) as base64 PNG."""
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _estimate(value: float) -> dict:
    return {"value": value, "ci_low": value * 0.9, "ci_high": value * 1.1, "n": 500}


def _point(model, kind, mode, decode, rate, bits, mse, *, estimators=MNIST_ESTIMATORS, seed=0,
           shape=(1, 28, 28)) -> dict:
    est_bits = None if kind == "classical" else bits * 0.95
    return {
        "model": model, "codec": model, "kind": kind, "mode": mode, "decode": decode, "rate_setting": rate,
        **rate_fields({"estimated": est_bits, "actual": bits, "file": bits + 112}, shape),
        "mse": mse, "psnr": float(-10 * np.log10(mse)), "ssim": 0.8,
        "perception": {k: _estimate(10 * mse * (i + 1)) for i, k in enumerate(estimators)},
        "accuracy": 0.95, "images": 1000, "seconds": 3.5, "recon_png": _png_b64(seed),
    }


def mnist_results() -> dict:
    points, seed = [], 0
    for model, mode, rates in ((MNIST_U, "U", [{"t_stop": t} for t in (0.2, 0.4, 0.6)]),
                               (MNIST_C, "C", [{"lambda": lam} for lam in (0.01, 0.1)])):
        for i, rate in enumerate(rates):
            for j, decode in enumerate(("flow", "realism", "mse")):
                seed += 1
                points.append(_point(model, "ldcodec", mode, decode, rate, 80.0 * (i + 1), 0.02 / (i + 1) + 0.001 * j,
                                     seed=seed))
    realism = next(p for p in points if p["model"] == MNIST_U and p["decode"] == "realism"
                   and p["rate_setting"] == {"t_stop": 0.4})
    realism["mse"] = 2.6 * next(p for p in points if p["model"] == MNIST_U and p["decode"] == "mse"
                                and p["rate_setting"] == {"t_stop": 0.4})["mse"]  # above Blau & Michaeli's 2
    realism["psnr"] = float(-10 * np.log10(realism["mse"]))
    for i, quality in enumerate((10, 50, 90)):
        points.append(_point("jpeg", "classical", None, None, {"quality": quality}, 300.0 * (i + 1), 0.01 / (i + 1),
                             estimators=("fid", "knn_kl"), seed=100 + i))
    return {
        "schema": SCHEMA, "created": "2026-11-28T20:00:00Z", "machine": MACHINE, "dataset": "mnist",
        "split": "test", "images": 1000, "image_shape": [1, 28, 28],
        "classifier": {"path": "runs/classifier/mnist.safetensors", "test_accuracy": 0.996},
        "originals_png": _png_b64(999),
        "noise_floor": {k: _estimate(0.05) for k in
                        ("fid", "kid", "knn_kl", "f_kl", "f_js", "f_tv", "f_chi2", "f_hellinger")},
        "points": points,
        "realism_mse_ratio": realism_ratios(points),
    }


def gaussian_results() -> dict:
    """A Gaussian-source run with none of the optional image fields, and one point below R(D)."""
    d = len(VARIANCES)
    grid = np.linspace(0.01, 0.46, 40)

    def point(model, kind, decode, mse, gap_bits_per_dim):
        bits = d * (rate_distortion(VARIANCES, mse) + gap_bits_per_dim)
        ldcodec = kind == "ldcodec"
        return {"model": model, "codec": "diffc", "kind": kind, "mode": "U" if ldcodec else None, "decode": decode,
                "rate_setting": {"t_stop": round(0.3 + gap_bits_per_dim, 2)} if ldcodec else {},
                **rate_fields({"ideal": bits * 0.8 if ldcodec else None, "estimated": bits * 0.9 if ldcodec else None,
                               "actual": bits, "file": bits + 120}, (1, 1, d)),
                "mse": mse,
                "psnr": float(-10 * np.log10(mse)), "ssim": None, "accuracy": None, "images": 2000,
                "seconds": 0.4, "recon_png": None}

    return {
        "schema": SCHEMA, "created": "2026-11-28T21:00:00Z", "machine": "x86_64 CPU", "dataset": "gaussian",
        "split": "test", "images": 2000, "image_shape": [1, 1, d], "classifier": None, "originals_png": None,
        "noise_floor": None,
        "points": [point(GAUSS_MODEL, "ldcodec", "flow", 0.05, 0.3), point(GAUSS_MODEL, "ldcodec", "flow", 0.2, 0.2),
                   point("diffc-exact", "learned", None, 0.1, -0.2)],
        "realism_mse_ratio": [],
        "rd_bound": {"variances": VARIANCES, "distortion": grid.tolist(),
                     "rate_bits_per_dim": rd_curve(VARIANCES, grid).tolist()},
    }


class _TagChecker(HTMLParser):
    """Collects ``<img src>`` values and ``<figure data-figure>`` kinds, and checks that tags nest properly."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.figures, self.errors = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "figure":
            self.figures.append((a.get("data-dataset"), a.get("data-figure")))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    results = [mnist_results(), gaussian_results()]
    path = render_report(results, tmp_path_factory.mktemp("report") / "sub" / "report.html")
    text = path.read_text(encoding="utf-8")
    checker = _TagChecker()
    checker.feed(text)
    checker.close()
    return results, path, text, checker


def test_one_self_contained_html_document(report):
    _, path, text, checker = report
    assert path.is_file()
    assert text.startswith("<!DOCTYPE html>") and text.count("<html") == 1 and text.rstrip().endswith("</html>")
    assert checker.errors == [] and checker.stack == []
    for external in ("http://", "https://", 'src="file', "<script", "<link"):
        assert external not in text


def test_every_image_is_an_inline_png(report):
    _, _, _, checker = report
    prefix = "data:image/png;base64,"
    assert len(checker.images) > 0
    for src in checker.images:
        assert src.startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(src[len(prefix):], validate=True))) as im:
            assert im.format == "PNG"
            im.verify()


def test_figures_follow_the_data(report):
    _, _, _, checker = report
    m, g = "mnist, 1000 images", "gaussian, 2000 images"
    expected = Counter({(m, "psnr"): 1, (m, "estimate"): 1, (m, "plane-fid"): 1, (m, "plane-knn_kl"): 1,
                        (g, "psnr"): 1, (g, "estimate"): 1, (g, "rd-bound"): 1})
    expected.update((m, f"perception-{k}") for k in MNIST_ESTIMATORS)
    assert Counter(checker.figures) == expected


def test_reconstruction_strips(report):
    results, _, text, checker = report
    recon_points = sum(p["recon_png"] is not None for r in results for p in r["points"])
    models_with_recon = {p["model"] for p in results[0]["points"]}
    # originals once per model, plus one strip per stored reconstruction
    assert text.count('class="strip"') == recon_points + len(models_with_recon)
    # mode U rows are sorted by rate: t=0.2 precedes t=0.4 precedes t=0.6
    block = text[text.index(f"<h4>{MNIST_U}</h4>"):text.index(f"<h4>{MNIST_C}</h4>")]
    positions = [block.index(f"flow · t={t}") for t in (0.2, 0.4, 0.6)]
    assert positions == sorted(positions)
    assert "q=50" in text and "λ=0.01" in text
    assert text.count("<h3>Reconstructions</h3>") == 1  # the Gaussian source stores no images


def test_tables_list_every_point_and_flag(report):
    results, _, text, _ = report
    for model in (MNIST_U, MNIST_C, "jpeg", GAUSS_MODEL, "diffc-exact"):
        assert model in text
    points = [p for r in results for p in r["points"]]
    assert text.count('data-row="point"') == len(points)
    for p in points:
        assert f"<td>{p['psnr']:.2f}</td>" in text
    assert text.count('<tr class="flag">') == 1  # the realism/MSE ratio 2.6 > 2
    assert text.count('<tr class="below-bound">') == 1  # the diffc-exact point 0.2 bits/dim below R(D)
    assert "99.60%" in text and "no classifier" in text
    assert "<td>t=0.5</td>" in text and "<td>fixed</td>" in text  # an empty rate setting: fixed by training
    for p in points:  # every rate of every point is in the table
        for key in ("bits_actual", "bits_file"):
            assert f"<td>{p[key]:.1f}</td>" in text
        if p["bits_ideal"] is not None:
            assert f"<td>{p['bits_ideal']:.1f}</td>" in text


def test_text_is_escaped(report):
    _, _, text, _ = report
    assert "x86_64 &lt;CPU&gt; &amp; &quot;torch&quot; 2.13" in text
    assert "<CPU>" not in text


def test_minimal_points_render(tmp_path):
    """Points with only the required keys: one PSNR figure, no perception, no strips, no estimates."""
    required = ("model", "kind", "rate_setting", "bits_actual", "bits_file", "bpp_actual", "bpp_file",
                "bits_per_dim_actual", "bits_per_dim_file", "mse", "psnr")
    res = {"schema": SCHEMA, "dataset": "cifar10",
           "points": [{k: _point("webp", "classical", None, None, {"quality": q}, 1000.0 * q, 0.01 / q,
                                 shape=(3, 32, 32))[k] for k in required} for q in (1, 2)]}
    checker = _TagChecker()
    checker.feed(render_report([res], tmp_path / "r.html").read_text(encoding="utf-8"))
    assert checker.figures == [("cifar10", "psnr")] and checker.errors == []


def test_load_results_round_trip(tmp_path):
    results = [mnist_results(), gaussian_results()]
    paths = []
    for r in results:
        paths.append(tmp_path / f"{r['dataset']}.json")
        paths[-1].write_text(json.dumps(r))
    assert load_results(paths) == results
    assert load_results(str(paths[1])) == results[1:]


def _write(tmp_path, text: str):
    path = tmp_path / "results.json"
    path.write_text(text)
    return path


def _corrupt(edit) -> str:
    r = copy.deepcopy(gaussian_results())
    edit(r)
    return json.dumps(r)


@pytest.mark.parametrize("make, message", [
    (lambda t: t / "absent.json", "not found"),
    (lambda t: _write(t, '{"schema": "ldcodec.results/2", "points": ['), "not valid JSON"),
    (lambda t: _write(t, _corrupt(lambda r: r.update(schema="ldcodec.results/1"))), "expected 'ldcodec.results/2'"),
    (lambda t: _write(t, _corrupt(lambda r: r["points"][0].update(rate_setting=0.5))), "'rate_setting' is not an object"),
    (lambda t: _write(t, _corrupt(lambda r: r["points"][0].pop("bits_file"))), "lacks the number 'bits_file'"),
    (lambda t: _write(t, "[1, 2]"), "not a JSON object"),
    (lambda t: _write(t, _corrupt(lambda r: r["points"][1].pop("psnr"))), "points[1] lacks the number 'psnr'"),
    (lambda t: _write(t, _corrupt(lambda r: r["points"][0].update(recon_png="not base64!"))), "not valid base64"),
    (lambda t: _write(t, _corrupt(lambda r: r["points"][0].update(recon_png=base64.b64encode(b"GIF89a").decode()))),
     "does not decode to a PNG"),
    (lambda t: _write(t, _corrupt(lambda r: r["rd_bound"].update(distortion=[0.1]))), "differ in length"),
])
def test_bad_inputs_raise(tmp_path, make, message):
    with pytest.raises(LdcodecError) as err:
        load_results([make(tmp_path)])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_render_rejects_bad_objects(tmp_path):
    with pytest.raises(LdcodecError, match="no results"):
        render_report([], tmp_path / "r.html")
    with pytest.raises(LdcodecError, match=re.escape("results[0]: schema is None")):
        render_report([{"points": []}], tmp_path / "r.html")
    with pytest.raises(LdcodecError, match="no results files"):
        load_results([])


def test_knob_curve_and_bjontegaard_table(tmp_path):
    """A stream decoded along eta gets the decoder-side D-P figure; curves and anchors of separate
    results files of a dataset are compared in the Bjøntegaard table."""
    r = mnist_results()
    for eta in (0.25, 0.5, 0.75):
        r["points"].append(_point(MNIST_U, "ldcodec", "U", f"eta={eta}", {"t_stop": 0.2}, 80.0, 0.02 + 0.003 * eta))
    u = [p for p in r["points"] if p["model"] == MNIST_U and p["decode"] == "mse"]
    for i, t in enumerate((0.1, 0.05)):  # the mse curve needs four points for the cubic
        u.append(_point(MNIST_U, "ldcodec", "U", "mse", {"t_stop": t}, 320.0 * (i + 1), 0.004 / (i + 1)))
    r["points"] += u[3:]
    anchors = copy.deepcopy(r)
    anchors["points"] = [_point(c, "learned" if c == "hyperprior" else "classical", None, None, {"q": q},
                                200.0 * (q + 1) * (2 if c == "webp" else 1), 0.03 / (q + 1))
                         for c in ("hyperprior", "webp") for q in range(5)]
    text = render_report([r, anchors], tmp_path / "r.html").read_text(encoding="utf-8")
    checker = _TagChecker()
    checker.feed(text)
    assert ("mnist, 1000 images", "knob-fid") in checker.figures and ("mnist, 1000 images", "knob-knn_kl") in checker.figures
    rows = re.findall(r'<tr data-row="bd">(.*?)</tr>', text)
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows]
    mse = {c[2]: c for c in cells if c[0] == MNIST_U and c[1] == "mse"}
    assert set(mse) == {"hyperprior", "webp"}
    assert float(mse["hyperprior"][3]) < 0 and float(mse["webp"][3]) < float(mse["hyperprior"][3])
    assert any("at least 4" in c[6] for c in cells)  # the flow curve has three points


def test_a_probe_of_another_size_gets_its_own_section_and_a_point_two_files_hold_is_drawn_once(tmp_path):
    """Points measured on 200 images are not drawn into the curve of 1000; a point merged into
    two files of one size (same model, codec, decode, rate) is one row of the points table, one
    reconstruction strip and one realism/MSE ratio row."""
    full, again, probe = mnist_results(), mnist_results(), mnist_results()
    probe["images"] = 200
    text = render_report([full, again, probe], tmp_path / "r.html").read_text(encoding="utf-8")
    sections = re.findall(r'<section class="dataset" id="ds-\d+"><h2>(.*?)</h2>(.*?)</section>', text, re.S)
    assert [name for name, _ in sections] == ["mnist, 1000 images", "mnist, 200 images"]
    strips = sum(p["recon_png"] is not None for p in full["points"]) + len({p["model"] for p in full["points"]})
    for _, body in sections:
        table = body.split("<h3>All points</h3>")[1]
        assert len(re.findall(r"<tr", table)) - 1 == len(full["points"])
        assert body.count('class="strip"') == strips  # the originals once per model, a strip per point
        assert body.count("<td>ratio &gt; 2</td>") == 1  # one ratio row, though both files stored it
