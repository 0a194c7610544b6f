import csv
import json

import numpy as np
import pytest
import torch

from ldcodec.data import load_split, to_tensor
from ldcodec.errors import LdcodecError
from ldcodec.evaluate import THEORY_MIN_BITS, Settings, evaluate
from ldcodec.metrics import rate
from ldcodec.metrics.features import save_classifier, train_classifier
from ldcodec.metrics.gaussian_source import rate_distortion
from ldcodec.results import SCHEMA, write_results
from ldcodec.train import train

from conftest import tiny_config

RATE_KEYS = {f"{unit}_{r}" for unit in ("bits", "bpp", "bits_per_dim") for r in rate.RATES}
POINT_KEYS = {"model", "codec", "kind", "mode", "decode", "rate_setting", "mse", "psnr", "ssim", "perception",
              "accuracy", "images", "seconds", "recon_png"} | RATE_KEYS


def test_gaussian_source_points_respect_shannon_bound():
    rates = [{"t_stop": t, "coding_steps": k} for k in (1, 2) for t in (0.5, 0.2)]
    s = Settings(mode_u=rates, perception=(), progress=False)
    r = evaluate(None, "gaussian", "test", 32, None, None, s, gaussian=(8, 0.7))
    assert r["schema"] == SCHEMA and len(r["points"]) == 12
    assert {p["model"] for p in r["points"]} == {"diffc-exact coding_steps=1", "diffc-exact coding_steps=2"}
    var = r["rd_bound"]["variances"]
    for p in r["points"]:
        assert set(p) == POINT_KEYS | {"theory"} and p["codec"] == "diffc" and p["mode"] == "U"
        assert p["bits_actual"] >= rate_distortion(var, p["mse"])  # no point beats R(D)
        assert p["bits_file"] >= p["bits_actual"] > p["bits_estimated"] > 0 and p["bits_ideal"] > 0
        assert p["bits_per_dim_actual"] == p["bpp_actual"] == p["bits_actual"] / 8  # d = 8 dims in one row
        if p["decode"] == "mse" and p["bits_ideal"] >= THEORY_MIN_BITS:  # the theory check ran and passed
            th = p["theory"]
            assert th["actual"] == pytest.approx(p["bits_actual"]) and th["actual"] >= th["estimated"]
        else:
            assert p["theory"] is None
    assert sum(p["theory"] is not None for p in r["points"]) == 2  # t = 0.2 (2.8 ideal bits) at both K
    assert all(0 < q["ratio"] for q in r["realism_mse_ratio"])


def test_rate_accounting_bug_is_caught_on_the_gaussian_source(monkeypatch):
    from ldcodec.codecs import base

    def undercounting(bits, image_shape):
        return rate.rate_fields({k: None if v is None else v / 1000 for k, v in bits.items()}, image_shape)

    monkeypatch.setattr(base, "rate_fields", undercounting)
    s = Settings(mode_u=[{"t_stop": 0.1}], decodes=("mse",), perception=(), progress=False)
    with pytest.raises(LdcodecError, match="rate-accounting bug"):
        evaluate(None, "gaussian", "test", 32, None, None, s, gaussian=(8, 0.7))


def test_mnist_model_and_baseline_end_to_end(tmp_path):
    run = tmp_path / "run"
    train(tiny_config("configs/grid/mnist-mlp-ddpm-uncond-gauss.yaml", "train.steps=10"), run, progress=False)
    x, y = load_split("mnist", "train", limit=512)
    clf = train_classifier(to_tensor(x), torch.from_numpy(y), epochs=1, max_steps=20, progress=False)
    save_classifier(clf, tmp_path / "clf", {"test_accuracy": 0.5})
    s = Settings(mode_u=[{"t_stop": 0.5}], rates={"jpeg": [{"quality": 50}]}, perception=("fid", "knn_kl", "f_js"),
                 critic_steps=20, baselines=("jpeg",), progress=False)
    r = evaluate(str(run), None, "test", 40, None, str(tmp_path / "clf"), s)
    assert [p["decode"] for p in r["points"]] == ["flow", "realism", "mse", None]
    assert r["points"][-1]["model"] == "jpeg" and r["points"][-1]["kind"] == "classical"
    assert r["points"][-1]["rate_setting"] == {"quality": 50} and r["points"][-1]["bits_estimated"] is None
    assert r["image_shape"] == [1, 28, 28]
    for p in r["points"]:
        assert set(p) == POINT_KEYS and p["images"] == 40
        assert set(p["perception"]) == {"fid", "knn_kl", "f_js"}
        assert 0 <= p["accuracy"] <= 1 and 0 < p["ssim"] <= 1 and p["bpp_file"] >= p["bpp_actual"] > 0
        assert p["bits_ideal"] is None or p["bits_ideal"] > 0
        est = p["perception"]["fid"]
        assert est["ci_low"] <= est["value"] <= est["ci_high"]
        assert est["n"] == r["noise_floor"]["fid"]["n"] == 20  # estimate and floor at one sample size
    assert set(r["noise_floor"]) == {"fid", "knn_kl", "f_js"} and len(r["realism_mse_ratio"]) == 1
    assert r["realism_mse_ratio"][0]["rate_setting"]["t_stop"] == pytest.approx(0.5)
    json_path, csv_path = write_results(r, tmp_path / "out" / "results.json")
    assert json.loads(json_path.read_text())["points"][0]["model"] == "mnist-mlp-ddpm-uncond-gauss"
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 4 and "perception.fid.value" in rows[0] and "recon_png" not in rows[0]
    assert "rate_setting.quality" in rows[0] and "bits_file" in rows[0]
    assert np.isclose(float(rows[3]["bits_actual"]), r["points"][3]["bits_actual"])


def test_mode_u_rates_reach_every_channel_simulator(tmp_path):
    """The stop times asked for apply to a mode U checkpoint whatever its simulator: a dq checkpoint's
    ``--t-values`` were keyed by the codec name ``diffc`` and silently replaced by the defaults."""
    run = tmp_path / "run"
    train(tiny_config("configs/grid/mnist-mlp-ddpm-uncond-gauss.yaml", "train.steps=2", "codec.simulator=dq"), run,
          progress=False)
    s = Settings(mode_u=[{"t_stop": 0.5}], decodes=("mse",), perception=("fid",), progress=False)
    r = evaluate(str(run), None, "test", 8, None, None, s)
    assert [p["codec"] for p in r["points"]] == ["diffc-dq"]
    assert r["points"][0]["rate_setting"]["t_stop"] == pytest.approx(0.5, abs=0.03)
    for key in ("diffc", "diffc-dq"):  # keyed by a codec's internal name, they would be ignored: refused
        with pytest.raises(LdcodecError, match="Settings.mode_u"):
            evaluate(str(run), None, "test", 8, None, None, Settings(rates={key: [{"t_stop": 0.5}]}, progress=False))


def test_bits_actual_is_the_framed_files_share(monkeypatch):
    """bits_actual comes from the bytes the sweep framed and decoded, not from the codec's word."""
    from ldcodec.codecs import container

    seen = []
    real = container.write

    def recording(*args):
        seen.append(real(*args))
        return seen[-1]

    monkeypatch.setattr(container, "write", recording)
    s = Settings(rates={"jpeg": [{"quality": 30}]}, perception=(), baselines=("jpeg",), progress=False)
    (p,) = evaluate(None, "mnist", "test", 16, None, None, s)["points"]
    assert p["bits_actual"] == 8 * len(seen[-1]) / 16 and p["bits_file"] > p["bits_actual"]


def test_missing_classifier_is_explained(tmp_path):
    with pytest.raises(LdcodecError, match="train-classifier"):
        evaluate(None, "mnist", "test", 16, None, str(tmp_path / "nope"), Settings(progress=False))


def test_unknown_baseline_lists_the_registered_ones():
    with pytest.raises(LdcodecError, match="factorized, hyperprior, jpeg, webp, avif"):
        evaluate(None, "mnist", "test", 16, None, None, Settings(baselines=("png",), perception=(), progress=False))


def test_packaged_classifier_is_found_and_accurate(tmp_path, monkeypatch):
    from ldcodec.metrics.features import PACKAGED_CLASSIFIERS, accuracy, evaluation_classifier

    monkeypatch.chdir(tmp_path)  # no runs/classifiers here: the packaged network is used
    clf, meta = evaluation_classifier("mnist", None)
    assert meta["path"] == str(PACKAGED_CLASSIFIERS / "classifier-mnist") and meta["test_accuracy"] > 0.99
    x, y = load_split("mnist", "test")
    assert accuracy(clf, to_tensor(x), torch.from_numpy(y)) > 0.98  # the built-in 1000 test digits


def test_png_folder_is_a_valid_evaluation_input(tmp_path):
    from ldcodec.data import save_png

    x, _ = load_split("mnist", "test", limit=24)
    for i, im in enumerate(x):
        save_png(im, tmp_path / f"{i:03d}.png")
    s = Settings(rates={"webp": [{"quality": 20}]}, perception=("fid",), baselines=("webp",), progress=False)
    r = evaluate(None, "mnist", "test", None, None, None, s, images_dir=str(tmp_path))
    assert r["images"] == 24 and r["split"] == str(tmp_path)
    (p,) = r["points"]
    assert p["model"] == "webp" and p["accuracy"] is None and "fid" in p["perception"]


def test_learned_baselines_train_once_per_lambda_and_sweep():
    s = Settings(perception=(), baselines=("factorized",), learned_lambdas=(0.01, 0.05), learned_steps=3,
                 progress=False)
    r = evaluate(None, "mnist", "test", 8, None, None, s)
    assert [(p["codec"], p["kind"], p["rate_setting"]) for p in r["points"]] == [
        ("factorized", "learned", {"lambda": 0.01}), ("factorized", "learned", {"lambda": 0.05})]
    for p in r["points"]:
        assert p["bits_file"] >= p["bits_actual"] >= 0.98 * p["bits_estimated"] - 8


def test_learned_dir_keeps_each_trained_baseline_and_reuses_only_the_same_training(tmp_path, monkeypatch):
    """--learned-dir: a second evaluation of the same training loads the network (same stream
    bits, no training); another lambda or step count trains anew."""
    import ldcodec.codecs.balle as balle

    s = Settings(perception=(), baselines=("hyperprior",), learned_lambdas=(0.01,), learned_steps=3,
                 learned_dir=str(tmp_path / "nets"), progress=False)
    first = evaluate(None, "mnist", "test", 8, None, None, s)
    (stored,) = (tmp_path / "nets").iterdir()
    trained = []
    real_train = balle.BalleCodec.train.__func__
    monkeypatch.setattr(balle.BalleCodec, "train", classmethod(lambda cls, *a, **k: trained.append(a[1]) or real_train(cls, *a, **k)))
    again = evaluate(None, "mnist", "test", 8, None, None, s)
    assert trained == [] and again["points"][0]["bits_actual"] == first["points"][0]["bits_actual"]
    assert again["points"][0]["mse"] == first["points"][0]["mse"]
    evaluate(None, "mnist", "test", 8, None, None, Settings(**{**s.__dict__, "learned_steps": 4}))
    assert trained == [0.01] and len(list((tmp_path / "nets").iterdir())) == 2
    stored.write_bytes(stored.read_bytes()[:100])  # a damaged store is refused, not retrained over silently
    with pytest.raises(LdcodecError, match="delete it"):
        evaluate(None, "mnist", "test", 8, None, None, s)


def test_a_perfect_reconstruction_scores_exactly_the_noise_floor():
    """Estimates and floors share the split and the sample sizes: reconstructions equal to the
    originals get the floor's value from every estimator (with N vs N against N/2 vs N/2 they did not)."""
    from ldcodec.evaluate import Measure

    x, y = load_split("mnist", "train", limit=256)
    clf = train_classifier(to_tensor(x), torch.from_numpy(y), epochs=1, max_steps=5, progress=False)
    images = to_tensor(load_split("mnist", "test", limit=64)[0])
    measure = Measure(images, None, clf, Settings(perception=("fid", "kid", "knn_kl", "f_js"), critic_steps=10),
                      images=True)
    floor, scores = measure.noise_floor(), measure(images)["perception"]
    assert set(scores) == set(floor) == {"fid", "kid", "knn_kl", "f_js"}
    for k in scores:
        assert scores[k] == floor[k], k


def test_resume_takes_finished_points_from_the_log_and_measures_the_rest(tmp_path, monkeypatch):
    """An evaluation killed after its first rate setting resumes without redoing it (issue 13)."""
    import ldcodec.evaluate as ev
    from ldcodec.codecs.pillow import PillowCodec

    settings = ev.Settings(rates={"jpeg": [{"quality": 10}, {"quality": 60}]}, baselines=("jpeg",),
                           perception=("fid",), progress=False)
    args = (None, "mnist", "test", 40, None, None, settings)
    fresh = ev.evaluate(*args)
    calls, real = [], PillowCodec.compress

    def dies_on_second(self, x, rate=None):
        calls.append(rate)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, x, rate)

    monkeypatch.setattr(PillowCodec, "compress", dies_on_second)
    log = tmp_path / "r.json.partial.jsonl"
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(*args, resume=log)
    calls.clear()
    monkeypatch.setattr(PillowCodec, "compress", lambda self, x, rate=None: (calls.append(rate), real(self, x, rate))[1])
    resumed = ev.evaluate(*args, resume=log)
    assert calls == [{"quality": 60}]  # the first setting came from the log
    strip = lambda ps: [{k: v for k, v in p.items() if k != "seconds"} for p in ps]  # noqa: E731
    assert strip(resumed["points"]) == strip(fresh["points"])
    other = ev.Settings(rates={"jpeg": [{"quality": 10}]}, baselines=("jpeg",), perception=("fid",), progress=False)
    calls.clear()
    ev.evaluate(None, "mnist", "test", 40, None, None, other, resume=log)  # another evaluation: not reused
    assert calls == [{"quality": 10}]


def test_label_names_the_model_series_and_its_resumed_points(tmp_path):
    """``--label`` makes two checkpoints of one config two series; points logged under another label are not reused."""
    run = tmp_path / "run"
    train(tiny_config("configs/grid/mnist-mlp-ddpm-uncond-gauss.yaml", "train.steps=2"), run, progress=False)
    s = Settings(mode_u=[{"t_stop": 0.5}], rates={"jpeg": [{"quality": 50}]}, decodes=("mse",), perception=(),
                 baselines=("jpeg",), progress=False)
    log = tmp_path / "r.partial.jsonl"
    first = evaluate(str(run), None, "test", 8, None, None, s, resume=log, label="lean")
    assert [p["model"] for p in first["points"]] == ["lean", "jpeg"]
    second = evaluate(str(run), None, "test", 8, None, None, s, resume=log, label="wide")
    assert [p["model"] for p in second["points"]] == ["wide", "jpeg"]
    assert evaluate(str(run), None, "test", 8, None, None, s)["points"][0]["model"] == "mnist-mlp-ddpm-uncond-gauss"


def test_per_image_results_average_to_the_point_and_stay_out_of_the_csv(tmp_path):
    """``per_image`` (the grid's bootstrap resamples it): one entry per image whose means are the
    point's PSNR, accuracy and estimated bits; a list of the wrong length is refused."""
    run = tmp_path / "run"
    train(tiny_config("configs/grid/mnist-mlp-ddpm-uncond-gauss.yaml", "train.steps=2"), run, progress=False)
    s = Settings(mode_u=[{"t_stop": 0.5}], rates={"jpeg": [{"quality": 50}]}, decodes=("mse",), perception=("fid",),
                 baselines=("jpeg",), per_image=True, progress=False)
    from ldcodec.metrics.features import PACKAGED_CLASSIFIERS

    r = evaluate(str(run), None, "test", 12, None, str(PACKAGED_CLASSIFIERS / "classifier-mnist"), s)
    for p in r["points"]:
        per = p["per_image"]
        assert len(per["psnr"]) == len(per["correct"]) == 12
        assert np.mean(per["psnr"]) == pytest.approx(p["psnr"], abs=1e-3)
        assert np.mean(per["correct"]) == pytest.approx(p["accuracy"])
    diffc, jpeg = r["points"]
    assert np.mean(diffc["per_image"]["bits_estimated"]) == pytest.approx(diffc["bits_estimated"], abs=0.01)
    assert jpeg["per_image"]["bits_estimated"] is None
    _, csv_path = write_results(r, tmp_path / "results.json")
    assert not any(k.startswith("per_image") for k in next(csv.DictReader(csv_path.open())))
    diffc["per_image"]["psnr"] = diffc["per_image"]["psnr"][:-1]
    with pytest.raises(LdcodecError, match="per_image.psnr"):
        write_results(r, tmp_path / "bad.json")
