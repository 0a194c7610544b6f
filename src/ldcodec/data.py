"""Datasets: ``.npz`` shards, folders of PNGs, the built-in MNIST sample, downloads when online.

Shard format (as in ``shared/data/README.md``): a dataset folder holds ``{split}-NN.npz``
files, each with ``images`` (uint8, NHWC) and ``labels`` (uint8); a split is the
concatenation of its files in name order. ``--data-root DIR`` (or ``$LDCODEC_DATA``) names
either the folder that holds ``mnist/`` and ``cifar10/`` or a dataset folder itself.
Without either, MNIST falls back to the built-in sample (``assets/mnist-sample.npz``: the
first 4000 training and 1000 test images of MNIST, CC BY-SA 3.0, see ``assets/README.md``).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import torch

from .errors import LdcodecError

SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
BUILTIN = Path(__file__).parent / "assets" / "mnist-sample.npz"


def image_shape(dataset: str) -> tuple[int, int, int]:
    """``(H, W, C)`` of a dataset's images."""
    if dataset not in SHAPES:
        raise LdcodecError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(SHAPES)}")
    return SHAPES[dataset]


def resolve_root(root: str | os.PathLike | None) -> Path | None:
    """The data root from the argument, else ``$LDCODEC_DATA``, else ``None`` (built-in sample)."""
    root = root or os.environ.get("LDCODEC_DATA") or None
    if root is None:
        return None
    path = Path(root).expanduser()
    if not path.is_dir():
        raise LdcodecError(f"data root {path} is not a folder; pass --data-root DIR with DIR/mnist/*.npz")
    return path


def _dataset_dir(root: Path, dataset: str) -> Path:
    if (root / dataset).is_dir():
        return root / dataset
    if any(root.glob("*-[0-9][0-9].npz")):
        return root
    raise LdcodecError(f"no {dataset} shards under {root}: expected {root}/{dataset}/train-00.npz; "
                       f"`ldcodec data download {dataset} --to {root}` writes them")


def check_images(images: np.ndarray, shape: tuple[int, int, int], where: str) -> np.ndarray:
    """Raise a clear error unless ``images`` is uint8 ``(N, *shape)``."""
    if images.dtype != np.uint8:
        raise LdcodecError(f"{where}: images must be uint8, got {images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != shape:
        raise LdcodecError(f"{where}: images must have shape (N, {', '.join(map(str, shape))}), got {images.shape}")
    return images


def _read_shard(path: Path, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as z:
            if "images" not in z or "labels" not in z:
                raise LdcodecError(f"{path}: a shard needs arrays 'images' and 'labels', found {list(z.keys())}")
            images, labels = z["images"], z["labels"]
    except (OSError, ValueError, zlib.error, EOFError) as e:
        raise LdcodecError(f"{path}: not a readable .npz shard ({e})") from None
    check_images(images, shape, str(path))
    if labels.shape != (len(images),):
        raise LdcodecError(f"{path}: labels must have shape ({len(images)},), got {labels.shape}")
    return images, labels.astype(np.int64)


def load_split(dataset: str, split: str, root: str | os.PathLike | None = None,
               limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W, C)`` uint8 and labels ``(N,)`` int64 of a split (``train``/``test``)."""
    shape = image_shape(dataset)
    base = resolve_root(root)
    if base is None:
        if dataset != "mnist":
            raise LdcodecError(f"{dataset} is not built in: pass --data-root DIR (or set LDCODEC_DATA), "
                               f"or run `ldcodec data download {dataset} --to DIR`")
        images, labels = _read_shard(BUILTIN, shape) if split == "train" else _builtin_test(shape)
        return images[:limit], labels[:limit]
    folder = _dataset_dir(base, dataset)
    files = sorted(folder.glob(f"{split}-[0-9][0-9].npz"))
    if not files:
        raise LdcodecError(f"split {split!r} is empty: no {folder}/{split}-NN.npz files")
    parts, labels, total = [], [], 0
    for f in files:
        im, lb = _read_shard(f, shape)
        parts.append(im)
        labels.append(lb)
        total += len(im)
        if limit is not None and total >= limit:
            break
    return np.concatenate(parts)[:limit], np.concatenate(labels)[:limit]


def _builtin_test(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    with np.load(BUILTIN) as z:
        return check_images(z["test_images"], shape, str(BUILTIN)), z["test_labels"].astype(np.int64)


def load_png_folder(path: str | os.PathLike, shape: tuple[int, int, int] | None = None) -> tuple[np.ndarray, list[str]]:
    """All ``*.png`` in a folder (sorted by name) as uint8 NHWC, with their file names."""
    folder = Path(path)
    files = sorted(folder.glob("*.png"))
    if not files:
        raise LdcodecError(f"{folder}: no .png images found")
    return np.stack([load_png(f, shape) for f in files]), [f.name for f in files]


def load_png(path: str | os.PathLike, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """One PNG as uint8 ``(H, W, C)``; ``shape`` checks size and converts the mode (L or RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if shape is not None:
                if im.size != (shape[1], shape[0]):
                    raise LdcodecError(f"{path}: image is {im.size[0]}x{im.size[1]}, the model needs "
                                       f"{shape[1]}x{shape[0]}; resize or crop it first")
                if im.mode not in ("L", "RGB", "RGBA", "P", "LA", "I;16", "I"):
                    raise LdcodecError(f"{path}: unsupported image mode {im.mode}; save it as grayscale or RGB")
                im = im.convert("L" if shape[2] == 1 else "RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as e:
        raise LdcodecError(f"{path}: not a readable image ({e})") from None
    return arr[..., None] if arr.ndim == 2 else arr


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 ``(H, W, C)`` image as PNG."""
    from PIL import Image

    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [0, 1] -> uint8 NHWC (rounded, clipped)."""
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Batches:
    """Random training batches from an in-memory dataset, stateless in the step.

    The global batch ``k`` (``batch_size`` images) depends only on ``(seed, k)`` and the device
    that draws its indices, so a resumed run sees exactly the batches an uninterrupted run would
    have seen, whatever its process count. ``batches(k, rank, world)`` is the ``rank``-th of
    ``world`` equal slices of it (the split of a distributed sampler).

    ``resident=True`` keeps the whole set on ``device`` as uint8 (MNIST 47 MB, CIFAR-10 150 MB):
    indices are drawn there and no step copies from the host. ``resident=False`` keeps it on the
    host (pinned for a GPU) and copies each batch over, the classic data-loader path.
    ``channels_last`` returns batches in that memory format (for the CNN cells on a GPU).
    Returns float ``(B / world, C, H, W)`` in [0, 1].
    """

    def __init__(self, images: np.ndarray, batch_size: int, seed: int, flip: bool, device: str = "cpu",
                 resident: bool = True, channels_last: bool = False):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.device = torch.device(device)
        self.draw_device = self.device if resident else torch.device("cpu")
        if resident:
            x = x.to(self.device)
        elif self.device.type == "cuda":
            x = x.pin_memory()
        self.x = x
        self.batch_size, self.seed, self.flip = batch_size, seed, flip
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        if self.batch_size % world:
            raise ValueError(f"batch of {self.batch_size} does not split into {world} equal parts")
        g = torch.Generator(self.draw_device).manual_seed(self.seed * 1_000_003 + step)
        idx = torch.randint(len(self.x), (self.batch_size,), generator=g, device=self.draw_device)
        part = slice(rank * self.batch_size // world, (rank + 1) * self.batch_size // world)
        x = self.x[idx[part]]
        if self.flip:
            mask = torch.rand(self.batch_size, generator=g, device=self.draw_device)[part] < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        x = x.to(self.device, non_blocking=True)
        return x.float().div_(255.0).contiguous(memory_format=self.memory_format)


def download(dataset: str, to: str | os.PathLike) -> list[Path]:
    """Fetch a dataset with torchvision (online only) and write it as shards under ``to/dataset``."""
    image_shape(dataset)
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise LdcodecError("downloading needs torchvision: pip install torch==2.14.1 torchvision==0.29.1 "
                           "(or copy .npz shards into the folder yourself)") from None
    out = Path(to) / dataset
    out.mkdir(parents=True, exist_ok=True)
    cls = tvd.MNIST if dataset == "mnist" else tvd.CIFAR10
    written = []
    for split in ("train", "test"):
        try:
            ds = cls(str(out / "raw"), train=split == "train", download=True)
        except Exception as e:  # torchvision raises URLError, RuntimeError, ... when offline
            raise LdcodecError(f"could not download {dataset} ({e.__class__.__name__}: {e}); are you online?") from None
        images = np.asarray(ds.data, dtype=np.uint8)
        images = images[..., None] if images.ndim == 3 else images
        labels = np.asarray(ds.targets, dtype=np.uint8)
        per = 5000 if dataset == "cifar10" else len(images)
        for i in range(0, len(images), per):
            path = out / f"{split}-{i // per:02d}.npz"
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, images=images[i:i + per], labels=labels[i:i + per])
            tmp.replace(path)
            written.append(path)
    return written
