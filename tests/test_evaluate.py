import csv
import json

import numpy as np
import pytest
import torch

from ldcodec.codec import Codec
from ldcodec.data import load_split, to_tensor
from ldcodec.errors import LdcodecError
from ldcodec.evaluate import SCHEMA, Settings, evaluate, write_results
from ldcodec.metrics.features import save_classifier, train_classifier
from ldcodec.metrics.gaussian_source import rate_distortion
from ldcodec.train import train

from conftest import tiny_config

POINT_KEYS = {"model", "kind", "mode", "decode", "rate_setting", "bits_actual", "bits_estimated", "bpp_actual",
              "bpp_estimated", "mse", "psnr", "ssim", "perception", "accuracy", "images", "seconds", "recon_png"}


def test_gaussian_source_points_respect_shannon_bound():
    s = Settings(t_values=(0.5, 0.2), coding_steps=(2, 4), perception=())
    r = evaluate(None, "gaussian", "test", 32, None, None, s, progress=False, gaussian=(8, 0.7))
    assert r["schema"] == SCHEMA and len(r["points"]) == 12
    assert {p["model"] for p in r["points"]} == {"diffc-exact K=2", "diffc-exact K=4"}
    var = r["rd_bound"]["variances"]
    for p in r["points"]:
        assert set(p) == POINT_KEYS
        assert p["bits_actual"] >= rate_distortion(var, p["mse"])  # no point beats R(D)
        assert p["bits_actual"] > p["bits_estimated"] > 0
    assert all(0 < q["ratio"] for q in r["realism_mse_ratio"])


def test_rate_accounting_bug_is_caught_on_the_gaussian_source(monkeypatch):
    real = Codec.compress

    def undercounting(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        result.actual_bits = result.actual_bits / 1000
        return result

    monkeypatch.setattr(Codec, "compress", undercounting)
    with pytest.raises(LdcodecError, match="rate-accounting bug"):
        evaluate(None, "gaussian", "test", 32, None, None, Settings(t_values=(0.1,), decodes=("mse",), perception=()),
                 progress=False, gaussian=(8, 0.7))


def test_mnist_model_and_baseline_end_to_end(tmp_path):
    run = tmp_path / "run"
    train(tiny_config("configs/grid/mnist-mlp-ddpm-uncond-gauss.yaml", "train.steps=10"), run, progress=False)
    x, y = load_split("mnist", "train", limit=512)
    clf = train_classifier(to_tensor(x), torch.from_numpy(y), epochs=1, max_steps=20, progress=False)
    save_classifier(clf, tmp_path / "clf", {"test_accuracy": 0.5})
    s = Settings(t_values=(0.5,), perception=("fid", "knn_kl", "f_js"), critic_steps=20, baselines=("jpeg",),
                 qualities={"jpeg": (50,)})
    r = evaluate(str(run), None, "test", 40, None, str(tmp_path / "clf"), s, progress=False)
    assert [p["decode"] for p in r["points"]] == ["flow", "realism", "mse", None]
    assert r["points"][-1]["model"] == "jpeg" and r["points"][-1]["kind"] == "classical"
    for p in r["points"]:
        assert set(p) == POINT_KEYS and p["images"] == 40
        assert set(p["perception"]) == {"fid", "knn_kl", "f_js"}
        assert 0 <= p["accuracy"] <= 1 and 0 < p["ssim"] <= 1 and p["bpp_actual"] > 0
        est = p["perception"]["fid"]
        assert est["ci_low"] <= est["value"] <= est["ci_high"]
    assert set(r["noise_floor"]) == {"fid", "knn_kl", "f_js"} and len(r["realism_mse_ratio"]) == 1
    json_path, csv_path = write_results(r, tmp_path / "out" / "results.json")
    assert json.loads(json_path.read_text())["points"][0]["model"] == "mnist-mlp-ddpm-uncond-gauss"
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 4 and "perception.fid.value" in rows[0] and "recon_png" not in rows[0]
    assert np.isclose(float(rows[3]["bits_actual"]), r["points"][3]["bits_actual"])


def test_missing_classifier_is_explained(tmp_path):
    with pytest.raises(LdcodecError, match="train-classifier"):
        evaluate(None, "mnist", "test", 16, None, str(tmp_path / "nope"), Settings(), progress=False)


def test_packaged_classifier_is_found_and_accurate(tmp_path, monkeypatch):
    from ldcodec.evaluate import PACKAGED_CLASSIFIERS, _classifier
    from ldcodec.metrics.features import accuracy

    monkeypatch.chdir(tmp_path)  # no runs/classifiers here: the packaged network is used
    clf, meta = _classifier("mnist", None, "cpu")
    assert meta["path"] == str(PACKAGED_CLASSIFIERS / "classifier-mnist") and meta["test_accuracy"] > 0.99
    x, y = load_split("mnist", "test")
    assert accuracy(clf, to_tensor(x), torch.from_numpy(y)) > 0.98  # the built-in 1000 test digits


def test_png_folder_is_a_valid_evaluation_input(tmp_path):
    from ldcodec.data import save_png

    x, _ = load_split("mnist", "test", limit=24)
    for i, im in enumerate(x):
        save_png(im, tmp_path / f"{i:03d}.png")
    s = Settings(perception=("fid",), baselines=("webp",), qualities={"webp": (20,)})
    r = evaluate(None, "mnist", "test", None, None, None, s, progress=False, images_dir=str(tmp_path))
    assert r["images"] == 24 and r["split"] == str(tmp_path)
    (p,) = r["points"]
    assert p["model"] == "webp" and p["accuracy"] is None and "fid" in p["perception"]
