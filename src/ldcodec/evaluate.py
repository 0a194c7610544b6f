"""``ldcodec evaluate``: a sweep over registered codecs, every one measured the same way.

For each codec (the checkpoint's ``diffc`` or ``cdc`` codec, and the baselines named by
``--baseline``, all from :data:`ldcodec.codecs.CODECS`) and each of its rate settings: compress
the evaluated images, frame them in one format 2 file (:mod:`ldcodec.codecs.container`), decompress
from the framed bytes with every decode the codec offers, and measure. Every point carries the
rates of :meth:`~ldcodec.codecs.base.Codec.rates` (ideal, estimated, actual = the image's share of the
file, file = one image alone in a file), distortion (MSE, per-image PSNR, SSIM), perception
estimates with confidence intervals (FID and KID on the project classifier's 64-d features; the
kNN KL of Wang, Kulkarni & Verdú 2009 and the f-divergence lower bounds on its 8-d whitened
projection) and the classifier's accuracy on the reconstructions.

Perception at a known sample size: every estimator compares the real features of a random half
``A`` of the images with the reconstructions of the other half ``B`` (so pairs never meet), and
its noise floor compares ``A`` with the real ``B`` (:func:`~ldcodec.metrics.perception.noise_floor`):
estimate and floor have the same sample sizes, hence the same finite-sample bias.

Theory checks: on the synthetic Gaussian source (``dataset = gaussian``) every point is compared
with the Shannon bound ``R(D)`` and a point below it raises (a rate-accounting bug); on images the
ratio of the realism decode's MSE to the mse decode's MSE at the same rate is reported (Blau &
Michaeli 2019: at most 2 at perfect realism). The schema is in ``docs/results-schema.md``.
"""

from __future__ import annotations

import datetime
import hashlib
import functools
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .diffusion.decodes import knob_eta
from .metrics.bjontegaard import bd_table
from .codecs import CODECS, baselines, decode_names, get_codec, model_codec
from .baselines.learned import LAMBDA_START
from .codecs.base import Codec
from .data import load_split, to_tensor, to_uint8
from .errors import LdcodecError
from .metrics import distortion, perception
from .results import SCHEMA, realism_ratios
from .viz import png_b64

THEORY_MIN_BITS = 1.0  # Gaussian source: ideal bits per vector from which the theory check runs
PERCEPTION = ("fid", "kid", "knn_kl", "f_kl", "f_js", "f_tv", "f_chi2", "f_hellinger")


@dataclass
class Settings:
    """What to sweep and measure (the command line's options).

    ``mode_u``: the rate settings of mode U (``t_stop`` / ``bits`` / ``coding_steps``), whichever
    channel simulator the checkpoint's codec uses; ``rates``: per baseline codec name, its rate
    settings (e.g. JPEG qualities). Empty means the codec's
    :meth:`~ldcodec.codecs.base.Codec.default_rates`. ``decodes``: the decode methods to measure,
    for codecs that offer them. ``ideal_stride``: mode U's ideal-rate quadrature on every n-th level
    (None: DiffC's default 16 for a model, every level for the Gaussian theory check). ``learned_dir``:
    where trained Ballé networks are kept and reused. ``per_image``: each point also carries its
    per-image results (``per_image``: PSNR, classifier correctness, estimated bits; the grid's
    bootstrap intervals, :mod:`ldcodec.grid_effects`).
    """

    mode_u: list[dict] = field(default_factory=list)
    rates: dict[str, list[dict]] = field(default_factory=dict)
    decodes: tuple[str, ...] = field(default_factory=decode_names)
    perception: tuple[str, ...] = PERCEPTION
    critic_steps: int = 300
    baselines: tuple[str, ...] = ()
    learned_lambdas: tuple[float, ...] = (0.002, 0.01, 0.05)
    learned_steps: int = 2000
    learned_lambda_start: float | None = LAMBDA_START
    learned_dir: str | None = None
    ideal_stride: int | None = None  # None: DiffC's default
    per_image: bool = False
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def rates_for(self, codec: Codec) -> list[dict]:
        asked = self.mode_u if codec.mode == "U" else self.rates.get(codec.name)
        return list(asked or codec.default_rates())

    def decodes_for(self, codec: Codec) -> list[str]:
        if codec.decodes == ("default",):
            return ["default"]
        return [d for d in self.decodes if d in codec.decodes or (codec.decode_knob and knob_eta(d) is not None)]


class Measure:
    """Measures reconstructions of fixed originals ``(N, C, H, W)``; the originals' features are computed once."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor | None, classifier, settings: Settings, images: bool):
        self.x, self.labels, self.classifier, self.s, self.images = x, labels, classifier, settings, images
        self.real = self._features(x)

    def _features(self, x: torch.Tensor) -> dict[str, np.ndarray] | None:
        """One classifier pass: ``full`` and ``low`` features and the ``predicted`` classes of ``x``."""
        from .metrics.features import feature_views

        if self.classifier is None:
            return None
        return {k: v.numpy() for k, v in feature_views(self.classifier, x).items()}

    def _estimators(self):
        s, half = self.s, len(self.x) // 2
        est = {
            "fid": ("full", perception.fid),
            "kid": ("full", functools.partial(perception.kid, subset_size=min(1000, max(2, half // 2)))),
            "knn_kl": ("low", perception.knn_kl),
        }
        for name in ("kl", "js", "tv", "chi2", "hellinger"):
            est[f"f_{name}"] = ("low", functools.partial(perception.f_divergence, divergence=name,
                                                         steps=s.critic_steps, seed=s.seed))
        return {k: v for k, v in est.items() if k in s.perception}

    def noise_floor(self) -> dict:
        """Each estimator between the real half ``A`` and the real half ``B`` (the estimates' split)."""
        if self.real is None:
            return {}
        return {k: perception.noise_floor(fn, self.real[space], seed=self.s.seed).to_dict()
                for k, (space, fn) in self._estimators().items()}

    def __call__(self, y: torch.Tensor) -> dict:
        """Distortion, perception and accuracy of reconstructions ``y`` (like the originals); with
        ``settings.per_image`` also ``per_image``: ``psnr`` (dB, 3 decimals) and ``correct`` (0/1, or
        None without a classifier and labels), one entry per image."""
        psnr = distortion.psnr(self.x, y)
        out = {"mse": float(distortion.mse(self.x, y).mean()), "psnr": float(psnr.mean()),
               "ssim": float(distortion.ssim(self.x, y).mean()) if self.images else None,
               "perception": {}, "accuracy": None}
        correct = None
        recon = self._features(y)
        if recon is not None:
            for k, (space, fn) in self._estimators().items():
                out["perception"][k] = fn(*perception.unpaired(self.real[space], recon[space], seed=self.s.seed)).to_dict()
            if self.labels is not None:
                correct = recon["predicted"] == self.labels.cpu().numpy()
                out["accuracy"] = float(correct.mean())
        if self.s.per_image:
            out["per_image"] = {"psnr": [round(float(v), 3) for v in psnr],
                                "correct": None if correct is None else correct.astype(int).tolist()}
        return out


class PointLog:
    """Finished points of an interrupted evaluation, so that ``--resume`` does not redo them.

    A JSON-lines file: the first line names the evaluation (a hash of its inputs and settings), each
    further line one finished (codec, model id, rate) group with its points, appended and flushed to
    disk as soon as it is measured. A file of another evaluation is started afresh; a line cut short
    by a kill is ignored. The file is deleted once the results are written.
    """

    def __init__(self, path: str | Path, key: str):
        self.path, self.done = Path(path), {}
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        if lines and lines[0] == json.dumps({"evaluation": key}):
            for line in lines[1:]:
                try:
                    entry = json.loads(line)
                    self.done[entry["group"]] = entry["points"]
                except (ValueError, KeyError, TypeError):
                    break  # the last line of a killed run
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w") as f:  # rewritten: only complete entries survive
            f.write(json.dumps({"evaluation": key}) + "\n")
            for group, pts in self.done.items():
                f.write(json.dumps({"group": group, "points": pts}) + "\n")

    def get(self, group: str) -> list[dict] | None:
        return self.done.get(group)

    def add(self, group: str, points: list[dict]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"group": group, "points": points}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[group] = points

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def codec_points(label: str, codec: Codec, measure: Measure, s: Settings, check=None,
                 log: PointLog | None = None) -> list[dict]:
    """One codec's sweep: every rate setting, each decoded from its framed file by every decode.

    Rate keys after the first that vary across the sweep (e.g. mode U's ``coding_steps``) name
    separate series ``LABEL key=value``. ``check(c, data, y, decode)``, if given, is a theory check
    of each point (it raises on a violation); what it returns is the point's ``theory``. ``log``:
    finished rate settings are taken from it instead of measured again, and new ones added to it.
    """
    rates = s.rates_for(codec)
    varying = [k for k in dict.fromkeys(k for r in rates for k in list(r)[1:]) if len({r.get(k) for r in rates}) > 1]
    points = []
    for rate in tqdm(rates, desc=f"{label}: rates", disable=not s.progress):
        group = json.dumps([label, codec.name, codec.model_id().hex(), rate], sort_keys=True, default=str)
        if log is not None and log.get(group) is not None:
            points += log.get(group)
            continue
        first = len(points)
        series = " ".join([label] + [f"{k}={rate[k]}" for k in varying if k in rate])
        start = time.perf_counter()
        c = codec.compress(measure.x, rate)
        data = codec.frame(c)
        encode_seconds = time.perf_counter() - start
        fields = codec.rates(c, data)
        for decode in s.decodes_for(codec):
            start = time.perf_counter()
            y = codec.decompress_file(data, **({} if decode == "default" else {"decode": decode}))
            seconds = encode_seconds + time.perf_counter() - start
            p = {"model": series, "codec": codec.name, "kind": codec.kind, "mode": codec.mode,
                 "decode": None if decode == "default" else decode, "rate_setting": c.rate_setting, **fields}
            p.update(measure(y))
            if s.per_image:
                est = c.estimated_bits
                p["per_image"]["bits_estimated"] = None if est is None else [round(float(v), 2) for v in est]
            p.update(images=len(y), seconds=float(seconds),
                     recon_png=png_b64(to_uint8(y[:8])) if measure.images else None)
            if check is not None:
                p["theory"] = check(c, data, y, decode)
            points.append(p)
        if log is not None:
            log.add(group, points[first:])
    return points


def gaussian_results(dim: int, ratio: float, n: int, s: Settings) -> dict:
    """DiffC with the exact prior on ``N(0, diag(ratio^i))``: points, ``R(D)`` curve and the theory
    checks: every point against ``R(D)``, and each mse-decode point of at least ``THEORY_MIN_BITS``
    ideal bits per vector (below, the Monte-Carlo noise of near-zero rates decides the
    inequalities) against ``actual >= estimated >= ideal`` and ``MSE >= MMSE``
    (:func:`~ldcodec.metrics.gaussian_source.check_diffc_point`, its numbers in the point's
    ``theory``). A violation raises: it is an accounting or coding bug."""
    from .metrics.gaussian_model import ExactGaussianModel
    from .metrics.gaussian_source import GaussianSource, check_diffc_point, check_point, rd_curve

    source = GaussianSource.geometric(dim, ratio)
    var = np.array(source.variances)
    # the theory check measures the ideal on every level unless told otherwise: the exact model's denoiser is free
    codec = model_codec(ExactGaussianModel(var), ideal_stride=1 if s.ideal_stride is None else s.ideal_stride)
    x = source.sample(n, seed=s.seed).reshape(n, 1, 1, dim)
    measure = Measure(x, None, None, s, images=False)

    def theory(c, data, y, decode):
        if decode != "mse" or c.ideal_bits.mean() < THEORY_MIN_BITS:
            return None
        mse = ((y - x) ** 2).flatten(1).mean(1).numpy()
        snr = codec.tables.snr[c.extra["level"]]
        return check_diffc_point(var, snr, c.ideal_bits, c.estimated_bits, codec.actual_bits(c, data), mse).to_dict()

    points = codec_points("diffc-exact", codec, measure, s, theory)
    for p in points:
        check_point(p["bits_actual"], p["mse"], var)
    grid_d = np.geomspace(var.min() * 1e-3, var.mean(), 60)
    return {"points": points, "realism_mse_ratio": realism_ratios(points),
            "rd_bound": {"variances": var.tolist(), "distortion": grid_d.tolist(),
                         "rate_bits_per_dim": (rd_curve(var, grid_d) / dim).tolist()},
            "images": n, "image_shape": [1, 1, dim]}


def baseline_codecs(names: tuple[str, ...], image_shape: tuple[int, int, int], dataset: str, data_root,
                    s: Settings) -> list[Codec]:
    """The registered baselines ``names`` for images ``(C, H, W)``; the learned ones train on the
    dataset's whole training split (the data the models are trained on; loaded once)."""
    bad = [b for b in names if b not in baselines()]
    if bad:
        raise LdcodecError(f"unknown baseline {', '.join(bad)}; choose from: {', '.join(baselines())}")

    @functools.cache
    def train_images() -> torch.Tensor:
        return to_tensor(load_split(dataset, "train", data_root)[0])

    return [c for name in names for c in get_codec(name).for_sweep(image_shape, train_images, s)]


def evaluate(checkpoint: str | None, dataset: str | None, split: str, limit: int | None, data_root,
             classifier_path: str | None, settings: Settings, gaussian: tuple[int, float] = (16, 0.7),
             images_dir: str | None = None, resume: str | Path | None = None, label: str | None = None) -> dict:
    """Run the whole evaluation and return the results dict (schema ``ldcodec.results/2``).

    ``images_dir``: evaluate on a folder of PNGs (of the dataset's size) instead of a split; they
    carry no labels, so classifier accuracy is left out. ``resume``: a :class:`PointLog` file; the
    points an interrupted run of the same evaluation finished are taken from it (the caller deletes
    it once the results are written). ``label``: the model's series name in the results (default the
    checkpoint config's ``name``), so that two checkpoints of one config stay two curves.
    """
    from .checkpoint import load_model
    from .metrics.features import evaluation_classifier

    unknown = sorted(set(settings.rates) - set(CODECS))
    if unknown:
        raise LdcodecError(f"rate settings for unknown codec(s) {', '.join(unknown)}; codecs: {', '.join(CODECS)}")
    trained = sorted(n for n in settings.rates if CODECS[n].mode is not None)
    if trained:
        raise LdcodecError(f"rate settings keyed by the model codec(s) {', '.join(trained)}: mode U's go to "
                           "Settings.mode_u (whatever its channel simulator); mode C's rate is fixed by training")
    device = settings.device
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
        return {**head, "dataset": "gaussian", **gaussian_results(gaussian[0], gaussian[1], limit or 200, settings)}
    if images_dir is not None:
        from .data import image_shape, load_png_folder

        images, labels = load_png_folder(images_dir, image_shape(dataset))[0][:limit], None
        head["split"] = str(images_dir)
    else:
        images, labels = load_split(dataset, split, data_root, limit=limit)
    classifier, head["classifier"] = evaluation_classifier(dataset, classifier_path)
    x = to_tensor(images)
    measure = Measure(x, None if labels is None else torch.from_numpy(labels), classifier, settings, images=True)
    codecs = [(label or model.cfg.name, model_codec(model, checkpoint, device=device, data_root=data_root,
                                           ideal_stride=settings.ideal_stride))] if model else []
    codecs += [(c.name, c) for c in baseline_codecs(settings.baselines, tuple(x.shape[1:]), dataset, data_root,
                                                    settings)]
    log = None
    if resume is not None:
        kept = {k: v for k, v in vars(settings).items() if k not in ("learned_dir", "progress")}  # not the results
        key = hashlib.sha256(json.dumps([checkpoint, dataset, split, limit, images_dir, classifier_path,
                                         repr(sorted(kept.items()))], default=str).encode()).hexdigest()
        log = PointLog(resume, key)
    points = [p for label, codec in codecs for p in codec_points(label, codec, measure, settings, log=log)]
    return {**head, "dataset": dataset, "images": len(images), "image_shape": list(x.shape[1:]),  # (C, H, W)
            "originals_png": png_b64(images[:8]), "noise_floor": measure.noise_floor(), "points": points,
            "realism_mse_ratio": realism_ratios(points), "bd": bd_table(points)}
