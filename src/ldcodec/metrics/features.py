"""The project's own feature classifier: the feature space of FID/KID/kNN/critics, and semantic fidelity.

No pretrained network (Inception) can be downloaded here, so perception is measured in
the feature space of a small CNN trained on the same dataset (``docs/design.md`` §7), and
semantic fidelity is that classifier's accuracy on reconstructions.

- :class:`FeatureClassifier`: three conv stages (two 3x3 conv + BatchNorm + ReLU each,
  max-pooling between them), global average pooling, a ``feature_dim``-d (default 64)
  ReLU feature layer, a linear classifier. Input ``(N, C, H, W)`` in ``[0, 1]``, any
  ``H, W`` (MNIST 28x28x1, CIFAR-10 32x32x3).
- ``features(model, x)``: the ``(N, 64)`` penultimate features (for FID / KID), or with
  ``projected=True`` their PCA projection onto the top ``low_dim`` (default 8) principal
  directions of the training features, whitened (for the kNN estimator and critics,
  which need few dimensions). The projection is fitted at the end of training and
  saved with the weights. ``feature_views(model, x)`` gives both and the predicted classes in
  one pass (what ``evaluate`` measures).
- Checkpoint: ``NAME.safetensors`` (weights and projection) with ``NAME.json`` beside it
  (architecture config and free-form metadata, e.g. the test accuracy).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ldcodec.errors import LdcodecError
from ldcodec.seeds import cpu_generator, global_seed


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of a :class:`FeatureClassifier`; saved as JSON beside the weights."""

    in_channels: int
    num_classes: int = 10
    width: int = 32
    feature_dim: int = 64
    low_dim: int = 8


def _conv_stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class FeatureClassifier(nn.Module):
    """``(N, C, H, W)`` images in ``[0, 1]`` -> ``(N, num_classes)`` logits, with feature taps."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(
            _conv_stage(config.in_channels, w), nn.MaxPool2d(2),
            _conv_stage(w, 2 * w), nn.MaxPool2d(2),
            _conv_stage(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, config.feature_dim), nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(config.feature_dim, config.num_classes)
        # PCA-whitening projection of the features, fitted after training (zero = not fitted)
        self.register_buffer("proj_mean", torch.zeros(config.feature_dim))
        self.register_buffer("proj_matrix", torch.zeros(config.feature_dim, config.low_dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, feature_dim)`` penultimate features."""
        return self.body(x * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def project(self, f: torch.Tensor) -> torch.Tensor:
        """``(N, feature_dim) -> (N, low_dim)``: whitened PCA coordinates of the features."""
        if not torch.any(self.proj_matrix):
            raise LdcodecError("the classifier's feature projection is not fitted: call fit_projection(model, images)")
        return (f - self.proj_mean) @ self.proj_matrix


def augment_flip_crop(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR-style augmentation of a ``(N, C, H, W)`` batch: random horizontal flip and random crop.

    Each image is flipped with probability 1/2, zero-padded by ``pad`` pixels and cropped
    back to ``H x W`` at a uniformly random offset.
    """
    n, c, h, w = x.shape
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = (torch.randint(0, 2 * pad + 1, (2, n), generator=generator)).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _batched(model: FeatureClassifier, images: torch.Tensor, fn, batch_size: int) -> torch.Tensor:
    model.eval()
    device = _model_device(model)
    return torch.cat([fn(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)])


def features(model: FeatureClassifier, images: torch.Tensor, projected: bool = False, batch_size: int = 1000) -> torch.Tensor:
    """``(N, C, H, W)`` images in ``[0, 1]`` -> ``(N, 64)`` features, or ``(N, 8)`` with ``projected=True``.

    Runs in eval mode on the model's device; returns a float32 CPU tensor.
    """
    fn = (lambda x: model.project(model.features(x))) if projected else model.features
    return _batched(model, images, fn, batch_size)


@torch.no_grad()
def feature_views(model: FeatureClassifier, images: torch.Tensor, batch_size: int = 1000) -> dict[str, torch.Tensor]:
    """One pass of the classifier over ``(N, C, H, W)`` images: ``full`` features ``(N, 64)``, their
    ``low`` projection ``(N, 8)`` and the ``predicted`` classes ``(N,)`` (what :func:`features`,
    ``features(projected=True)`` and :func:`accuracy` give, for a third of the cost)."""
    full = features(model, images, batch_size=batch_size)
    f = full.to(_model_device(model))
    return {"full": full, "low": model.project(f).float().cpu(), "predicted": model.head(f).argmax(dim=1).cpu()}


def accuracy(model: FeatureClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy on ``(N, C, H, W)`` images with ``(N,)`` integer labels (semantic fidelity)."""
    predicted = _batched(model, images, lambda x: model(x).argmax(dim=1), batch_size)
    return float((predicted == labels.cpu()).double().mean())


def fit_projection(model: FeatureClassifier, images: torch.Tensor, limit: int = 10_000) -> None:
    """Fit the whitened PCA projection to the features of (at most ``limit``) ``(N, C, H, W)`` images.

    With feature covariance ``U diag(l) U^T``, the projection is ``(f - mean) U_k diag(l_k)^-1/2``
    for the ``k = low_dim`` largest eigenvalues, so projected training features have unit covariance.
    """
    f = features(model, images[:limit]).double()
    k = model.config.low_dim
    if len(f) <= k:
        raise ValueError(f"fit_projection needs more than low_dim={k} images, got {len(f)}")
    mean = f.mean(0)
    eigval, eigvec = torch.linalg.eigh(torch.cov((f - mean).T))
    top = eigval.flip(0)[:k].clamp_min(1e-12)
    model.proj_mean.copy_(mean.float())
    model.proj_matrix.copy_((eigvec.flip(1)[:, :k] / top.sqrt()).float())


def _warmup_cosine(step: int, total: int, warmup: float = 0.05) -> float:
    """Learning-rate factor: linear warm-up over the first 5% of the steps, then cosine decay to 0."""
    ramp = max(1, int(warmup * total))
    if step < ramp:
        return (step + 1) / ramp
    return 0.5 * (1 + math.cos(math.pi * (step - ramp) / max(1, total - ramp)))


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 10,
    device: str | torch.device = "cpu",
    batch_size: int = 128,
    lr: float = 2e-3,
    config: ClassifierConfig | None = None,
    augment: bool | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FeatureClassifier:
    """Train a :class:`FeatureClassifier` on ``(N, C, H, W)`` images in ``[0, 1]`` with ``(N,)`` labels.

    Cross-entropy, AdamW (weight decay 5e-4), warm-up then cosine learning-rate decay,
    ``epochs`` passes over a fresh permutation each (``max_steps`` caps the steps).
    ``augment`` (default: on for 3-channel images) applies :func:`augment_flip_crop`.
    The data set is moved to ``device`` whole. The PCA projection is fitted at the end;
    the model is returned in eval mode.
    """
    config = config or ClassifierConfig(in_channels=images.shape[1])
    augment = images.shape[1] == 3 if augment is None else augment
    generator = cpu_generator(seed)
    with global_seed(seed):
        model = FeatureClassifier(config).to(device)
    x, y = images.to(device), labels.to(device).long()
    per_epoch = math.ceil(len(x) / batch_size)
    total = per_epoch * epochs if max_steps is None else min(max_steps, per_epoch * epochs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _warmup_cosine(step, total))
    model.train()
    with tqdm(total=total, desc="train-classifier", disable=not progress) as bar:
        for step in range(total):
            if step % per_epoch == 0:
                order = torch.randperm(len(x), generator=generator).to(device)
            idx = order[(step % per_epoch) * batch_size : (step % per_epoch + 1) * batch_size]
            batch = augment_flip_crop(x[idx], generator) if augment else x[idx]
            loss = F.cross_entropy(model(batch), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    fit_projection(model, images)
    return model.eval()


def _checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    weights = Path(path)
    weights = weights if weights.suffix == ".safetensors" else weights.with_suffix(".safetensors")
    return weights, weights.with_suffix(".json")


def save_classifier(model: FeatureClassifier, path: str | Path, metadata: dict | None = None) -> Path:
    """Write ``path`` (``.safetensors``: weights and projection) and its ``.json`` config; return the weights path."""
    weights, config_path = _checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    config_path.write_text(json.dumps({"config": asdict(model.config), "metadata": metadata or {}}, indent=2) + "\n")
    return weights


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> FeatureClassifier:
    """Rebuild a classifier written by :func:`save_classifier`, in eval mode on ``device``."""
    weights, config_path = _checkpoint_paths(path)
    if not weights.is_file() or not config_path.is_file():
        raise LdcodecError(
            f"no feature classifier at {weights} (with {config_path.name} beside it): create it with "
            f"`ldcodec train-classifier --dataset mnist --out {weights}` (or --dataset cifar10)"
        )
    try:
        config = ClassifierConfig(**json.loads(config_path.read_text())["config"])
        model = FeatureClassifier(config)
        model.load_state_dict(load_file(str(weights)))
    except (KeyError, TypeError, ValueError, RuntimeError, OSError) as e:
        raise LdcodecError(f"{weights}: not a feature classifier checkpoint ({e}); retrain it with "
                           "`ldcodec train-classifier`") from None
    return model.to(device).eval()


# -- where the classifier comes from --------------------------------------------------------

PACKAGED_CLASSIFIERS = Path(__file__).resolve().parents[1] / "assets" / "classifiers"


def default_classifier_path(dataset: str) -> Path:
    """Where ``train-classifier`` writes by default: ``runs/classifiers/classifier-DATASET``."""
    return Path("runs") / "classifiers" / f"classifier-{dataset}"


def find_classifier(dataset: str) -> Path:
    """The user's own classifier at the default path if there is one, else the packaged one
    (trained by this project, frozen so that FID/KID numbers compare across runs and machines)."""
    own = default_classifier_path(dataset)
    return own if own.with_suffix(".safetensors").is_file() else PACKAGED_CLASSIFIERS / f"classifier-{dataset}"


def evaluation_classifier(dataset: str, path: str | None) -> tuple[FeatureClassifier | None, dict | None]:
    """``(classifier on the CPU, {"path", "test_accuracy"})`` for evaluation, or ``(None, None)`` with a
    warning on stderr when no ``path`` was given and none is found (a given ``path`` must exist)."""
    import sys

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
