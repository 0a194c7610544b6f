"""``ldcodec evaluate``: rate, distortion and perception of a model and of baselines, on the same images.

Every operating point gets real bits (the stream's bytes), distortion (MSE, per-image PSNR,
SSIM), perception estimates with confidence intervals (FID and KID on the project classifier's
64-d features; the kNN KL of Wang, Kulkarni & Verdú 2009 and the f-divergence lower bounds on its
8-d whitened projection), and the classifier's accuracy on the reconstructions. Each estimator's
noise floor (two disjoint halves of the real images) is reported beside them. The output schema
is documented in ``docs/results-schema.md``.

Theory checks: on the synthetic Gaussian source (``dataset = gaussian``) every point is compared
with the Shannon bound ``R(D)`` and a point below it raises (a rate-accounting bug); on images the
ratio of the realism decode's MSE to the mse decode's MSE at the same rate is reported (Blau &
Michaeli 2019: at most 2 at perfect realism).
"""

from __future__ import annotations

import base64
import csv
import datetime
import functools
import io
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .codec import DECODES, Codec
from .config import Config
from .data import load_split, to_tensor, to_uint8
from .errors import LdcodecError
from .metrics import distortion, perception
from .viz import grid

SCHEMA = "ldcodec.results/1"
PERCEPTION = ("fid", "kid", "knn_kl", "f_kl", "f_js", "f_tv", "f_chi2", "f_hellinger")
BASELINES = ("jpeg", "webp", "avif", "factorized", "hyperprior")


@dataclass
class Settings:
    """What to sweep and measure (the command line's options)."""

    t_values: tuple[float, ...] = (0.7, 0.5, 0.35, 0.25, 0.15)
    coding_steps: tuple[int, ...] = ()  # mode U: coding steps to sweep (empty: the model's own)
    decodes: tuple[str, ...] = DECODES
    perception: tuple[str, ...] = PERCEPTION
    critic_steps: int = 300
    baselines: tuple[str, ...] = ()
    qualities: dict[str, tuple[int, ...]] = field(default_factory=dict)
    learned_lambdas: tuple[float, ...] = (0.002, 0.01, 0.05)
    learned_steps: int = 2000
    seed: int = 0


def png_b64(images: np.ndarray) -> str:
    """uint8 NHWC images in one row -> base64 PNG."""
    from PIL import Image

    tile = grid([images])
    buf = io.BytesIO()
    Image.fromarray(tile[..., 0] if tile.shape[-1] == 1 else tile).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class Measure:
    """Measures reconstructions of fixed originals ``(N, C, H, W)``; features are computed once."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor | None, classifier, settings: Settings, images: bool):
        self.x, self.labels, self.classifier, self.s, self.images = x, labels, classifier, settings, images
        self.real = self._features(x)

    def _features(self, x: torch.Tensor) -> dict[str, np.ndarray] | None:
        from .metrics.features import features

        if self.classifier is None:
            return None
        with torch.no_grad():
            return {"full": features(self.classifier, x).numpy(), "low": features(self.classifier, x, projected=True).numpy()}

    def _estimators(self):
        s = self.s
        est = {
            "fid": ("full", False, perception.fid),
            "kid": ("full", True, functools.partial(perception.kid, subset_size=min(1000, len(self.x) // 4))),
            "knn_kl": ("low", True, perception.knn_kl),
        }
        for name in ("kl", "js", "tv", "chi2", "hellinger"):
            est[f"f_{name}"] = ("low", False, functools.partial(perception.f_divergence, divergence=name,
                                                                steps=s.critic_steps, seed=s.seed))
        return {k: v for k, v in est.items() if k in s.perception}

    def noise_floor(self) -> dict:
        if self.real is None:
            return {}
        return {k: perception.noise_floor(fn, self.real[space], seed=self.s.seed).to_dict()
                for k, (space, _, fn) in self._estimators().items()}

    def __call__(self, y: torch.Tensor) -> dict:
        """Distortion, perception and accuracy of reconstructions ``y`` (like the originals)."""
        out = {"mse": float(distortion.mse(self.x, y).mean()), "psnr": float(distortion.psnr(self.x, y).mean()),
               "ssim": float(distortion.ssim(self.x, y).mean()) if self.images else None,
               "perception": {}, "accuracy": None}
        recon = self._features(y)
        if recon is not None:
            for k, (space, unpair, fn) in self._estimators().items():
                a, b = self.real[space], recon[space]
                if unpair:
                    a, b = perception.unpaired(a, b, seed=self.s.seed)
                out["perception"][k] = fn(a, b).to_dict()
            if self.labels is not None:
                from .metrics.features import accuracy

                out["accuracy"] = accuracy(self.classifier, y, self.labels)
        return out


def _point(model: str, kind: str, rate: float, bits: np.ndarray, est: np.ndarray | None, y: torch.Tensor,
           measure: Measure, seconds: float, pixels: int, mode: str | None = None, decode: str | None = None) -> dict:
    p = {"model": model, "kind": kind, "mode": mode, "decode": decode, "rate_setting": float(rate),
         "bits_actual": float(np.mean(bits)), "bits_estimated": None if est is None else float(np.mean(est)),
         "bpp_actual": float(np.mean(bits)) / pixels,
         "bpp_estimated": None if est is None else float(np.mean(est)) / pixels}
    p.update(measure(y))
    p.update(images=len(y), seconds=float(seconds),
             recon_png=png_b64(to_uint8(y[:8])) if measure.images else None)
    return p


def model_points(name: str, codec: Codec, measure: Measure, s: Settings, pixels: int, progress: bool) -> list[dict]:
    """The model's sweep: every ``t`` (mode U, for each number of coding steps) or its one rate
    (mode C), each with every decode. Several coding-step counts name the series ``NAME K=k``."""
    if codec.mode == "U":
        ks = list(s.coding_steps) or [None]
        rates = [(k, t) for k in ks for t in s.t_values]
    else:
        ks, rates = [None], [(None, None)]
    points = []
    for k, t in tqdm(rates, desc=f"{name}: rates", disable=not progress):
        series = f"{name} K={k}" if len(ks) > 1 else name
        start = time.perf_counter()
        r = codec.compress(measure.x, t=t, steps=k)
        enc = time.perf_counter() - start
        for decode in s.decodes:
            start = time.perf_counter()
            y = codec.decompress(r.stream, decode=decode)
            points.append(_point(series, "ldcodec", r.rate, r.actual_bits, r.estimated_bits, y, measure,
                                 enc + time.perf_counter() - start, pixels, codec.mode, decode))
    return points


def realism_ratios(points: list[dict]) -> list[dict]:
    """``MSE(realism) / MSE(mse)`` for every (model, rate) that has both decodes."""
    by = {(p["model"], p["rate_setting"], p["decode"]): p for p in points if p["kind"] == "ldcodec"}
    out = []
    for (model, rate, decode), p in by.items():
        q = by.get((model, rate, "mse"))
        if decode == "realism" and q is not None:
            out.append({"model": model, "rate_setting": rate, "bpp_actual": p["bpp_actual"],
                        "mse_realism": p["mse"], "mse_mse": q["mse"], "ratio": p["mse"] / max(q["mse"], 1e-12)})
    return out


def classical_points(images: np.ndarray, measure: Measure, s: Settings, pixels: int) -> list[dict]:
    from .baselines.classical import quality_sweep

    names = [b for b in s.baselines if b in ("jpeg", "webp", "avif")]
    points = []
    for pt in quality_sweep(images, names, s.qualities or None):
        start = time.perf_counter()
        y = to_tensor(pt.recon)
        points.append(_point(pt.codec, "classical", pt.quality, pt.bits, None, y, measure,
                             time.perf_counter() - start, pixels))
    return points


def learned_points(dataset: str, data_root, images: np.ndarray, measure: Measure, s: Settings, pixels: int,
                   device: str, progress: bool) -> list[dict]:
    """Ballé et al. factorised-prior / hyperprior codecs trained on the training split, coded with real bits."""
    from .baselines.learned import train_learned

    train_x, _ = load_split(dataset, "train", data_root, limit=20000)
    h, w = images.shape[1:3]
    points = []
    for kind in [b for b in s.baselines if b in ("factorized", "hyperprior")]:
        for lam in s.learned_lambdas:
            codec = train_learned(kind, to_tensor(train_x), lam, s.learned_steps, device=device, seed=s.seed,
                                  progress=progress)
            start = time.perf_counter()
            streams = codec.compress(measure.x)
            y = codec.decompress(streams, (h, w)).clamp(0, 1)
            bits = np.array([8.0 * len(b) for b in streams])
            with torch.no_grad():
                est = codec(measure.x, quantization="round")["bits"].numpy()
            points.append(_point(kind, "learned", lam, bits, est, y, measure, time.perf_counter() - start, pixels))
    return points


from .metrics.gaussian_model import ExactGaussianModel as _ExactGaussianModel  # noqa: E402


def gaussian_results(dim: int, ratio: float, n: int, s: Settings, coding_steps: int, progress: bool) -> dict:
    """DiffC with the exact prior on ``N(0, diag(ratio^i))``: points, ``R(D)`` curve, bound check."""
    from .metrics.gaussian_source import GaussianSource, check_point, rd_curve

    source = GaussianSource.geometric(dim, ratio)
    var = np.array(source.variances)
    cfg = Config()
    cfg.data.dataset = "gaussian"
    cfg.codec.coding_steps = coding_steps
    codec = Codec(_ExactGaussianModel(var, cfg))
    x = source.sample(n, seed=s.seed).reshape(n, 1, 1, dim)
    measure = Measure(x, None, None, s, images=False)
    points = model_points("diffc-exact", codec, measure, s, dim, progress)
    for p in points:
        check_point(p["bits_actual"], p["mse"], var)
    grid_d = np.geomspace(var.min() * 1e-3, var.mean(), 60)
    return {"points": points, "realism_mse_ratio": realism_ratios(points),
            "rd_bound": {"variances": var.tolist(), "distortion": grid_d.tolist(),
                         "rate_bits_per_dim": (rd_curve(var, grid_d) / dim).tolist()},
            "images": n, "image_shape": [1, dim, 1]}


def evaluate(checkpoint: str | None, dataset: str | None, split: str, limit: int | None, data_root,
             classifier_path: str | None, settings: Settings, device: str = "cpu", progress: bool = True,
             gaussian: tuple[int, float] = (16, 0.7), images_dir: str | None = None) -> dict:
    """Run the whole evaluation and return the results dict (schema ``ldcodec.results/1``).

    ``images_dir``: evaluate on a folder of PNGs (of the dataset's size) instead of a split; they
    carry no labels, so classifier accuracy is left out.
    """
    from .checkpoint import load_model

    head = {"schema": SCHEMA, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {'GPU' if device.startswith('cuda') else 'CPU'}, torch {torch.__version__}",
            "split": split, "classifier": None, "originals_png": None, "noise_floor": {}}
    model = None
    if checkpoint is not None:
        model, cfg, _ = load_model(checkpoint, device=device)
        if dataset not in (None, cfg.data.dataset):
            raise LdcodecError(f"--dataset {dataset} but the checkpoint models {cfg.data.dataset}")
        dataset = cfg.data.dataset
    if dataset is None:
        raise LdcodecError("give a CHECKPOINT or --dataset mnist|cifar10|gaussian")
    if dataset == "gaussian":
        return {**head, "dataset": "gaussian",
                **gaussian_results(gaussian[0], gaussian[1], limit or 200, settings, 4, progress)}
    if images_dir is not None:
        from .data import image_shape, load_png_folder

        images, labels = load_png_folder(images_dir, image_shape(dataset))[0][:limit], None
        head["split"] = str(images_dir)
    else:
        images, labels = load_split(dataset, split, data_root, limit=limit)
    h, w, c = images.shape[1:]
    classifier, head["classifier"] = _classifier(dataset, classifier_path, device)
    x = to_tensor(images)
    measure = Measure(x, None if labels is None else torch.from_numpy(labels), classifier, settings, images=True)
    points = []
    if model is not None:
        points += model_points(model.cfg.name, Codec(model, device=device), measure, settings, h * w, progress)
    points += classical_points(images, measure, settings, h * w)
    points += learned_points(dataset, data_root, images, measure, settings, h * w, device, progress)
    return {**head, "dataset": dataset, "images": len(images), "image_shape": [h, w, c],
            "originals_png": png_b64(images[:8]), "noise_floor": measure.noise_floor(), "points": points,
            "realism_mse_ratio": realism_ratios(points)}


PACKAGED_CLASSIFIERS = Path(__file__).parent / "assets" / "classifiers"


def default_classifier_path(dataset: str) -> Path:
    """Where ``train-classifier`` writes by default: ``runs/classifiers/classifier-DATASET``."""
    return Path("runs") / "classifiers" / f"classifier-{dataset}"


def find_classifier(dataset: str) -> Path:
    """The user's own classifier at the default path if there is one, else the packaged one
    (trained by this project, frozen so that FID/KID numbers compare across runs and machines)."""
    own = default_classifier_path(dataset)
    return own if own.with_suffix(".safetensors").is_file() else PACKAGED_CLASSIFIERS / f"classifier-{dataset}"


def _classifier(dataset: str, path: str | None, device: str):
    """The feature classifier, or ``(None, None)`` with a clear warning when it is missing."""
    import sys

    from .metrics.features import load_classifier

    p = Path(path) if path else find_classifier(dataset)
    try:
        clf = load_classifier(p, device="cpu").eval()
    except LdcodecError as e:
        if path:
            raise
        print(f"ldcodec: warning: no feature classifier at {p} ({e}); FID, KID, kNN KL, f-divergences and "
              f"accuracy are skipped. Train one: ldcodec train-classifier --dataset {dataset} --out {p}",
              file=sys.stderr)
        return None, None
    meta = json.loads(p.with_suffix(".json").read_text()) if p.with_suffix(".json").is_file() else {}
    return clf, {"path": str(p), "test_accuracy": meta.get("metadata", {}).get("test_accuracy")}


def write_results(results: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``results.json`` and the CSV copy of its points beside it (atomically)."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LdcodecError(f"cannot write results to {out} ({e.strerror})") from None
    tmp = out.with_name(f".tmp-{out.name}")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out)
    rows = [_flatten(p) for p in results.get("points", [])]
    csv_path = out.with_suffix(".csv")
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k.count("."), k))
    tmp = csv_path.with_name(f".tmp-{csv_path.name}")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(csv_path)
    return out, csv_path


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if k == "recon_png":
            continue
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def parse_qualities(text: str | None) -> dict[str, tuple[int, ...]]:
    """``"jpeg=10,50,90;webp=5,50"`` -> ``{"jpeg": (10, 50, 90), "webp": (5, 50)}``."""
    if not text:
        return {}
    out = {}
    for part in text.split(";"):
        name, _, values = part.partition("=")
        try:
            out[name.strip()] = tuple(int(v) for v in values.split(","))
        except ValueError:
            raise LdcodecError(f"--qualities {text!r}: write codec=q1,q2;codec=q1 with integer qualities") from None
    return out

