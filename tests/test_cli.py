import subprocess
import sys

import pytest

from ldcodec.cli import build_parser, main

from conftest import REPO


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "ldcodec.cli", "--help"], capture_output=True, text=True, check=True)
    for name in build_parser()._subparsers._group_actions[0].choices:
        assert name in out.stdout


@pytest.mark.parametrize("argv", [
    ["train", "configs/grid/nope.yaml", "--out", "X"],
    ["train", "configs/grid/mnist-mlp-ddpm-uncond-gauss.yaml", "--out", "X", "--set", "model.net=foo"],
    ["reconstruct", "not-a-checkpoint", "-o", "x.png"],
    ["train", "configs/grid/cifar10-mlp-ddpm-uncond-gauss.yaml", "--out", "X", "--data-root", "/nonexistent"],
    ["train", "configs/grid/mnist-mlp-ddpm-uncond-gauss.yaml", "--out", "X", "--device", "cdu"],
    ["evaluate", "--dataset", "gaussian", "-o", "X/r.json", "--decodes", "sharp"],
    ["evaluate", "--dataset", "mnist", "-o", "X/r.json", "--baseline", "png"],
    ["evaluate", "--dataset", "mnist", "-o", "X/r.json", "--baseline", "jpeg", "--qualities", "jpg=5,50"],
])
def test_user_errors_exit_2_with_one_line(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    argv = [a.replace("X", str(tmp_path / "run")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ldcodec: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["train"])
    assert e.value.code == 2


def test_train_and_reconstruct_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    run = tmp_path / "run"
    assert main(["train", "configs/grid/mnist-mlp-ddpm-uncond-gauss.yaml", "--out", str(run), "--steps", "3",
                 "--set", "model.prior=normal", "--set", "model.hidden=32", "--set", "train.batch_size=8"]) == 0
    assert main(["reconstruct", str(run), "-o", str(tmp_path / "rec.png"), "-n", "4"]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "rec.png").size == (2 + 4 * 30, 2 + 2 * 30)


def test_evaluate_writes_results_and_report_in_one_command(tmp_path):
    out = tmp_path / "g.json"
    assert main(["evaluate", "--dataset", "gaussian", "--gaussian-dim", "8", "--limit", "16", "--t-values", "0.3",
                 "--decodes", "mse", "-o", str(out), "--report", str(tmp_path / "g.html")]) == 0
    assert out.is_file() and out.with_suffix(".csv").is_file()
    assert "diffc-exact" in (tmp_path / "g.html").read_text()
    assert main(["evaluate", "--dataset", "gaussian", "-o", str(out), "--baseline", "png"]) == 2
