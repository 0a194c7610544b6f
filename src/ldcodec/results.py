"""The results of ``ldcodec evaluate``: schema, validation and (atomic) writing.

The schema (``ldcodec.results/2``) is documented in ``docs/results-schema.md``; every point's rate
fields come from :meth:`ldcodec.codecs.base.Codec.rates` through
:func:`ldcodec.metrics.rate.rate_fields`, the one place that turns bits per image into bpp and
bits per dimension. Rates, per image:

- ``bits_ideal``: the model's ideal rate where the codec defines one (else null);
- ``bits_estimated``: what the codec's densities promise (null for codecs without densities);
- ``bits_actual``: the image's share of one real file holding the whole evaluated set,
  ``8 * len(file) / N`` (container, header and parameters included, paid once per set; bytes
  common to every Pillow file of the set stored once);
- ``bits_file``: the mean size of a real file holding one image alone, container included.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
from collections.abc import Iterable
from pathlib import Path

from ldcodec.errors import LdcodecError
from ldcodec.files import write_atomic

SCHEMA = "ldcodec.results/2"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
POINT_NUMBERS = ("bits_actual", "bits_file", "bpp_actual", "bpp_file", "bits_per_dim_actual", "bits_per_dim_file",
                 "mse", "psnr")
POINT_OPTIONAL_NUMBERS = ("bits_ideal", "bits_estimated", "bpp_ideal", "bpp_estimated", "bits_per_dim_ideal",
                          "bits_per_dim_estimated", "ssim", "accuracy", "images", "seconds")
RATIO_NUMBERS = ("bpp_actual", "mse_realism", "mse_mse", "ratio")
_REGENERATE = "re-run `ldcodec evaluate` to write a valid results file"


def rate_text(rate: dict) -> str:
    """``t=0.3, K=8``, ``λ=0.01``, ``q=75``: a rate setting with the names of its knobs."""
    labels = {"t_stop": "t", "lambda": "λ", "quality": "q", "coding_steps": "K"}
    return ", ".join(f"{labels.get(k, k)}={v:g}" if _is_number(v) else f"{labels.get(k, k)}={v}"
                     for k, v in rate.items()) or "fixed"


def point_key(p: dict) -> str:
    """What makes a point one measurement: its model, codec, decode and rate setting."""
    return json.dumps([p["model"], p.get("codec"), p.get("decode"), p.get("rate_setting")], sort_keys=True, default=str)


def unique_points(points: Iterable[dict]) -> list[dict]:
    """``points`` in order, a point that several hold (same :func:`point_key`) once: the first."""
    kept: dict[str, dict] = {}
    for p in points:
        kept.setdefault(point_key(p), p)
    return list(kept.values())


def series_name(p: dict) -> str:
    """``diffc (U, flow)``: a point's curve, its model with its mode and decode."""
    parts = [x for x in (p.get("mode"), p.get("decode")) if x]
    return f"{p['model']} ({', '.join(parts)})" if parts else p["model"]


#: At perfect realism the MSE is at most twice the MSE-optimal one at the same rate (Blau & Michaeli,
#: "Rethinking lossy compression: the rate-distortion-perception tradeoff", ICML 2019).
BLAU_MICHAELI_BOUND = 2.0


def realism_ratios(points: list[dict]) -> list[dict]:
    """``MSE(realism) / MSE(mse)`` for every (model, rate setting) that has both decodes: the rows of
    ``realism_mse_ratio`` (at most :data:`BLAU_MICHAELI_BOUND` at perfect realism)."""
    key = lambda p: (p["model"], json.dumps(p["rate_setting"], sort_keys=True))  # noqa: E731
    mse_points = {key(p): p for p in points if p.get("decode") == "mse"}
    out = []
    for p in points:
        q = mse_points.get(key(p))
        if p.get("decode") == "realism" and q is not None:
            out.append({"model": p["model"], "rate_setting": p["rate_setting"], "bpp_actual": p["bpp_actual"],
                        "mse_realism": p["mse"], "mse_mse": q["mse"], "ratio": p["mse"] / max(q["mse"], 1e-12)})
    return out


def section_name(result: dict) -> str:
    """``mnist, 10000 images``: results are comparable only on the same dataset and image count."""
    return f"{result['dataset']}, {result['images']} images" if result.get("images") else result["dataset"]


# -- validation ---------------------------------------------------------------------------


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fail(where: str, what: str) -> LdcodecError:
    return LdcodecError(f"{where} {what}; {_REGENERATE}")


def _check_png(value, where: str) -> None:
    """``value`` is null or a base64 string of a PNG file."""
    if value is None:
        return
    if not isinstance(value, str):
        raise _fail(where, "is not a base64 PNG string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(where, "is not valid base64") from None
    if not raw.startswith(PNG_SIGNATURE):
        raise _fail(where, "does not decode to a PNG file")


def _check_estimate(est, where: str) -> None:
    if not isinstance(est, dict) or not all(_is_number(est.get(k)) for k in ("value", "ci_low", "ci_high")):
        raise _fail(where, "is not an Estimate {value, ci_low, ci_high, n}")


def _check_point(p, where: str) -> None:
    if not isinstance(p, dict):
        raise _fail(where, "is not an object")
    for key in ("model", "kind"):
        if not isinstance(p.get(key), str):
            raise _fail(where, f"lacks the string '{key}'")
    rate = p.get("rate_setting")
    if not isinstance(rate, dict) or not all(isinstance(k, str) and (_is_number(v) or isinstance(v, str))
                                             for k, v in rate.items()):
        raise _fail(where, "'rate_setting' is not an object of numbers and names")
    for key in POINT_NUMBERS:
        if not _is_number(p.get(key)):
            raise _fail(where, f"lacks the number '{key}'")
    for key in POINT_OPTIONAL_NUMBERS:
        if p.get(key) is not None and not _is_number(p[key]):
            raise _fail(where, f"'{key}' is neither a number nor null")
    perception = p.get("perception")
    if perception is not None:
        if not isinstance(perception, dict):
            raise _fail(where, "'perception' is not an object")
        for name, est in perception.items():
            _check_estimate(est, f"{where}.perception.{name}")
    _check_png(p.get("recon_png"), f"{where}.recon_png")
    per = p.get("per_image")
    if per is not None:
        if not isinstance(per, dict) or not isinstance(per.get("psnr"), list):
            raise _fail(where, "'per_image' is not an object with a 'psnr' list")
        for name, values in per.items():
            if values is not None and (not isinstance(values, list) or len(values) != p.get("images")
                                       or not all(_is_number(v) for v in values)):
                raise _fail(f"{where}.per_image.{name}", "is not a list of one number per image")


def _check_rd_bound(bound, where: str) -> None:
    if not isinstance(bound, dict):
        raise _fail(where, "is not an object")
    lists = {k: bound.get(k) for k in ("variances", "distortion", "rate_bits_per_dim")}
    for key, values in lists.items():
        if not isinstance(values, list) or not values or not all(_is_number(v) for v in values):
            raise _fail(where, f"'{key}' is not a non-empty list of numbers")
    if not all(v > 0 for v in lists["variances"]):
        raise _fail(where, "'variances' are not all positive")
    if len(lists["distortion"]) != len(lists["rate_bits_per_dim"]):
        raise _fail(where, "'distortion' and 'rate_bits_per_dim' differ in length")


def validate_results(obj, source: str) -> dict:
    """Check that ``obj`` is a results object of schema ``ldcodec.results/2``; return it unchanged.

    Required: ``schema``, ``dataset`` and ``points`` (each with ``model``, ``kind``, the object
    ``rate_setting`` and the numbers of :data:`POINT_NUMBERS`). Optional
    fields are type-checked when present. Raises :class:`LdcodecError` naming ``source``.
    """
    if not isinstance(obj, dict):
        raise _fail(source, "is not a JSON object")
    if obj.get("schema") != SCHEMA:
        raise LdcodecError(f"{source}: schema is {obj.get('schema')!r}, expected {SCHEMA!r}; "
                           "pass a results file written by `ldcodec evaluate -o results.json`")
    if not isinstance(obj.get("dataset"), str):
        raise _fail(source, "lacks the string 'dataset'")
    points = obj.get("points")
    if not isinstance(points, list):
        raise _fail(source, "lacks the list 'points'")
    for i, p in enumerate(points):
        _check_point(p, f"{source}: points[{i}]")
    for name, est in (obj.get("noise_floor") or {}).items():
        _check_estimate(est, f"{source}: noise_floor.{name}")
    for i, row in enumerate(obj.get("realism_mse_ratio") or []):
        if (not isinstance(row, dict) or not isinstance(row.get("rate_setting"), dict)
                or not all(_is_number(row.get(k)) for k in RATIO_NUMBERS)):
            raise _fail(f"{source}: realism_mse_ratio[{i}]", f"needs the numbers {', '.join(RATIO_NUMBERS)}")
    for i, row in enumerate(obj.get("bd") or []):
        if (not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("model", "anchor", "method"))
                or not all(row.get(k) is None or _is_number(row.get(k)) for k in ("bd_rate_pct", "bd_psnr_db"))):
            raise _fail(f"{source}: bd[{i}]", "needs 'model', 'anchor', 'method' and numbers or null "
                                             "'bd_rate_pct', 'bd_psnr_db'")
    if obj.get("rd_bound") is not None:
        _check_rd_bound(obj["rd_bound"], f"{source}: rd_bound")
    _check_png(obj.get("originals_png"), f"{source}: originals_png")
    return obj


def load_results(paths: Iterable[str | Path] | str | Path) -> list[dict]:
    """Read and validate results JSON files; one dict per file, in the given order.

    Raises :class:`LdcodecError` for no paths, a missing or unreadable file, invalid JSON,
    or a file that is not schema ``ldcodec.results/2`` (see :func:`validate_results`).
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise LdcodecError("no results files given; pass one or more results.json files from `ldcodec evaluate`")
    results = []
    for path in map(Path, paths):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LdcodecError(f"results file {path} not found; check the path or run `ldcodec evaluate` first") from None
        except (OSError, UnicodeDecodeError) as e:
            raise LdcodecError(f"cannot read results file {path}: {e}") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise LdcodecError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                               f"{_REGENERATE}") from None
        results.append(validate_results(obj, str(path)))
    return results


def write_results(results: dict, out: str | Path) -> tuple[Path, Path]:
    """Validate ``results`` and write ``results.json`` and the CSV copy of its points beside it (atomically)."""
    validate_results(results, "results")
    out = Path(out)
    write_atomic(out, lambda tmp: tmp.write_text(json.dumps(results, indent=1)), parents=True)
    rows = [_flatten(p) for p in results.get("points", [])]
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k.count("."), k))

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    return out, write_atomic(out.with_suffix(".csv"), write_csv)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if k in ("recon_png", "per_image"):
            continue
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
