"""``benchmarks/merge_results.py``: which points a merge keeps (codec filters, a rate held twice)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("merge_results", REPO / "benchmarks" / "merge_results.py")
merge_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(merge_results)


def _point(codec, setting, psnr, decode=None):
    return {"model": codec, "codec": codec, "decode": decode, "rate_setting": setting, "psnr": psnr}


def test_a_codec_filter_keeps_only_those_codecs_and_a_point_held_twice_counts_once(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.partial.jsonl"
    old.write_text(json.dumps({"points": [_point("hyperprior", {"lambda": 0.001}, 23.2),
                                          _point("webp", {"quality": 0}, 22.8)]}))
    new.write_text("\n".join([json.dumps({"evaluation": "key"}),
                              json.dumps({"points": [_point("hyperprior", {"lambda": 0.001}, 24.0)]}),
                              json.dumps({"points": [_point("webp", {"quality": 0}, 99.0)]}),
                              '{"points": [{"trunc']))  # the last line of a killed run
    merged = merge_results.merged_points([str(new), f"{old}:webp"])
    assert [(p["codec"], p["psnr"]) for p in merged] == [("hyperprior", 24.0), ("webp", 99.0)]
    merged = merge_results.merged_points([f"{old}:webp", str(new)])
    assert [(p["codec"], p["psnr"]) for p in merged] == [("webp", 22.8), ("hyperprior", 24.0)]


def test_a_filter_naming_a_codec_the_file_lacks_is_an_error(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"points": [_point("webp", {"quality": 0}, 22.8)]}))
    with pytest.raises(SystemExit, match="no points of jpeg"):
        merge_results.points_of(f"{old}:webp,jpeg")
