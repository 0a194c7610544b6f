"""Datasets: ``.npz`` shards, folders of PNGs, the built-in MNIST sample, downloads when online.

Shard format (as in ``shared/data/README.md``): a dataset folder holds ``{split}-NN.npz``
files, each with ``images`` (uint8, NHWC) and ``labels`` (uint8); a split is the
concatenation of its files in name order.

Shapes: an image shape (``image_shape``, every ``shape`` argument here) is ``(C, H, W)``, as
everywhere in ldcodec; the uint8 pixel arrays read and returned here are NHWC ``(N, H, W, C)``,
the storage layout of the shards and of PNGs (:func:`to_tensor` makes float NCHW of them). ``--data-root DIR`` (or ``$LDCODEC_DATA``) names
either the folder that holds ``mnist/`` and ``cifar10/`` or a dataset folder itself.
Without either, MNIST falls back to the built-in sample (``assets/mnist-sample.npz``: the
first 4000 training and 1000 test images of MNIST, CC BY-SA 3.0, see ``assets/README.md``).
"""

from __future__ import annotations

import os
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .errors import LdcodecError
from .seeds import batch_seed

SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # (C, H, W)
BUILTIN = Path(__file__).parent / "assets" / "mnist-sample.npz"


def image_shape(dataset: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of a dataset's images."""
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


def hwc(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The ``(H, W, C)`` of one image of a uint8 NHWC array, for an image shape ``(C, H, W)``."""
    c, h, w = shape
    return h, w, c


def check_images(images: np.ndarray, shape: tuple[int, int, int], where: str) -> np.ndarray:
    """Raise a clear error unless ``images`` is uint8 NHWC of images ``shape`` ``(C, H, W)``."""
    if images.dtype != np.uint8:
        raise LdcodecError(f"{where}: images must be uint8, got {images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != hwc(shape):
        raise LdcodecError(f"{where}: images must have shape (N, {', '.join(map(str, hwc(shape)))}) (NHWC), "
                           f"got {images.shape}")
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
    """Images uint8 NHWC ``(N, H, W, C)`` and labels ``(N,)`` int64 of a split (``train``/``test``)."""
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


def _warn(text: str) -> None:
    print(f"ldcodec: warning: {text}", file=sys.stderr)


def load_images(path: str | os.PathLike, shape: tuple[int, int, int]) -> tuple[np.ndarray, list[str]]:
    """Images to compress: a PNG file, a folder of PNGs or an ``.npz`` -> uint8 NHWC, names.

    ``shape`` ``(C, H, W)`` is the model's image shape; the array is ``(N, H, W, C)``.

    Conversions follow :func:`load_png` and :func:`load_npz_images`; each one made prints a
    ``ldcodec: warning:`` line on stderr.
    """
    p = Path(path)
    if p.is_dir():
        return load_png_folder(p, shape)
    if not p.is_file():
        raise LdcodecError(f"{p}: no such file or folder; INPUT is a .png, a folder of .png files or a .npz file")
    if p.suffix.lower() == ".npz":
        images = load_npz_images(p, shape)
        return images, [f"{i:06d}.png" for i in range(len(images))]
    return load_png(p, shape)[None], [p.name]


def load_png_folder(path: str | os.PathLike, shape: tuple[int, int, int] | None = None) -> tuple[np.ndarray, list[str]]:
    """All ``*.png`` files of a folder (any case, sorted by name) as uint8 NHWC, with their names.

    Each file goes through :func:`load_png`; a conversion is reported once per kind, with the
    number of files it applied to. ``shape`` ``(C, H, W)`` as in :func:`load_png`; without it
    the images must share one size and kind.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise LdcodecError(f"{folder} is not a folder of .png images")
    entries = sorted(p for p in folder.iterdir() if p.is_file())
    files = [p for p in entries if p.suffix.lower() == ".png"]
    if not files:
        others = f" (it holds {len(entries)} other files, e.g. {entries[0].name})" if entries else " (it is empty)"
        raise LdcodecError(f"{folder}: no .png images found{others}")
    images, notes = [], {}
    for f in files:
        image, made = _read_png(f, shape)
        images.append(image)
        for note in made:
            notes.setdefault(note, []).append(f.name)
    for note, names in notes.items():
        _warn(f"{folder}: {len(names)} of {len(files)} images ({', '.join(names[:3])}"
              f"{', ...' if len(names) > 3 else ''}): {note}")
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        first = images[0].shape
        other = next(f for f, im in zip(files, images) if im.shape != first)
        raise LdcodecError(f"{folder}: images differ in size or channels ({files[0].name} is "
                           f"{_describe(first)}, {other.name} is {_describe(next(iter(sizes - {first})))}); "
                           "a folder must hold images of one size")
    return np.stack(images), [f.name for f in files]


def load_png(path: str | os.PathLike, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """One image file (PNG, or any format Pillow reads) as uint8 ``(H, W, C)``.

    ``shape`` ``(C, H, W)`` is what the model takes: another size is an error naming the file;
    the pixels are converted to ``C`` channels as below. Every conversion that changes the
    stored samples prints a ``ldcodec: warning:`` line (exact ones, such as a palette lookup or
    a 1-bit image to 0/255, do not):

    - 16-bit samples are scaled to 8 bits, never clipped: ``v >> 8`` (the high byte, which is
      what Pillow does for 16-bit colour PNGs; an 8-bit value ``k`` stored as ``257 k`` comes
      back as ``k``).
    - Alpha (RGBA, LA, palette with transparency): fully opaque images just drop it; otherwise
      the image is composited on black, ``round(c * alpha / 255)`` (transparent = no light,
      as on MNIST's black background).
    - EXIF orientation is applied (``ImageOps.exif_transpose``), so the model sees the picture
      as a viewer shows it.
    - Grayscale to an RGB model: the gray channel is copied to R, G and B.
    - Colour to a grayscale model: ITU-R BT.601 luma ``Y = (299 R + 587 G + 114 B) / 1000``,
      rounded; an image whose R, G and B are equal everywhere is taken exactly.

    Other modes (CMYK, float, 32-bit integers beyond 16 bits, ...) are refused with a clear error.
    """
    image, notes = _read_png(path, shape)
    for note in notes:
        _warn(f"{path}: {note}")
    return image


BITS16 = "16-bit samples scaled to 8 bits (v >> 8, the high byte; not clipped)"
ALPHA = "transparent pixels composited on black (colour * alpha / 255)"
GRAY_TO_RGB = "grayscale image given to an RGB model: the gray channel is copied to R, G and B"
RGB_TO_GRAY = "colour image given to a grayscale model: converted to ITU-R BT.601 luma (299 R + 587 G + 114 B) / 1000"


def _read_png(path: str | os.PathLike, shape: tuple[int, int, int] | None) -> tuple[np.ndarray, list[str]]:
    """``(H, W, C)`` uint8 and the notes of the conversions made (see :func:`load_png`)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    notes = []
    try:
        with Image.open(path) as im:
            if shape is not None and sorted(im.size) != sorted(shape[1:]):  # checked before decoding
                _wrong_size(path, im.size, shape)
            if im.mode.startswith("I;16") or any(";16" in str(tile.args) for tile in im.tile):
                notes.append(BITS16)
            im.load()
            orientation = im.getexif().get(0x0112, 1)
            if orientation != 1:
                im = ImageOps.exif_transpose(im)
                notes.append(f"EXIF orientation {orientation} applied (the picture as a viewer shows it)")
            if shape is not None and im.size != (shape[2], shape[1]):  # Pillow's size is (W, H)
                _wrong_size(path, im.size, shape)
            arr = _samples(im, path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise LdcodecError(f"{path}: not a readable image ({e})") from None
    if arr.shape[-1] in (2, 4):
        arr = _drop_alpha(arr, notes)
    return _fit_channels(arr, None if shape is None else shape[0], notes), notes


def _wrong_size(path, size: tuple[int, int], shape: tuple[int, int, int]) -> None:
    """``size``: Pillow's ``(W, H)``; ``shape``: ``(C, H, W)``; both printed as ``WxH``."""
    raise LdcodecError(f"{path}: image is {size[0]}x{size[1]}, the model needs {shape[2]}x{shape[1]}; "
                       "resize or crop it first")


def _samples(im, path) -> np.ndarray:
    """A loaded Pillow image -> uint8 ``(H, W, C)``, ``C`` in 1 (L), 2 (LA), 3 (RGB), 4 (RGBA)."""
    if im.mode in ("L", "RGB", "RGBA", "LA"):
        arr = np.asarray(im)
    elif im.mode == "1":
        arr = np.asarray(im.convert("L"))
    elif im.mode in ("P", "PA"):
        alpha = im.mode == "PA" or "transparency" in im.info
        arr = np.asarray(im.convert("RGBA" if alpha else "RGB"))
    elif im.mode.startswith("I;16") or im.mode == "I":
        wide = np.asarray(im).astype(np.int64)
        if wide.size and (wide.min() < 0 or wide.max() > 65535):
            raise LdcodecError(f"{path}: integer samples outside 0..65535 (min {wide.min()}, max {wide.max()}); "
                               "save it as an 8- or 16-bit PNG")
        arr = (wide >> 8).astype(np.uint8)
    else:
        raise LdcodecError(f"{path}: unsupported image mode {im.mode}; save it as an 8- or 16-bit grayscale "
                           "or RGB(A) PNG")
    return arr[..., None] if arr.ndim == 2 else arr


def _drop_alpha(arr: np.ndarray, notes: list[str]) -> np.ndarray:
    """``(H, W, C + 1)`` with alpha last -> ``(H, W, C)``: dropped if opaque, else composited on black."""
    colour, alpha = arr[..., :-1].astype(np.int64), arr[..., -1:].astype(np.int64)
    if (alpha == 255).all():
        return arr[..., :-1]
    notes.append(ALPHA)
    return ((colour * alpha + 127) // 255).astype(np.uint8)


def _fit_channels(arr: np.ndarray, channels: int | None, notes: list[str]) -> np.ndarray:
    """``(..., 1 or 3)`` uint8 -> ``(..., channels)`` by the documented conversions (``None``: unchanged)."""
    have = arr.shape[-1]
    if channels is None or have == channels:
        return arr
    if have == 1 and channels == 3:
        notes.append(GRAY_TO_RGB)
        return np.repeat(arr, 3, axis=-1)
    if have == 3 and channels == 1:
        r, g, b = (arr[..., i].astype(np.int64) for i in range(3))
        if (r == g).all() and (g == b).all():
            return arr[..., :1]
        notes.append(RGB_TO_GRAY)
        return ((299 * r + 587 * g + 114 * b + 500) // 1000).astype(np.uint8)[..., None]
    raise LdcodecError(f"images have {have} channels, the model takes {channels}")


def _describe(shape: tuple[int, ...]) -> str:
    """An array's ``(H, W, C)`` as ``WxH with C channel(s)``."""
    return f"{shape[1]}x{shape[0]} with {shape[2]} channel(s)"


def load_npz_images(path: str | os.PathLike, shape: tuple[int, int, int]) -> np.ndarray:
    """The ``images`` array of an ``.npz`` file -> uint8 NHWC ``(N, H, W, C)`` for ``shape`` ``(C, H, W)``.

    Accepted: NHWC ``(N, H, W, C)`` or grayscale ``(N, H, W)``, of any integer dtype with values in
    0..255 (cast exactly). Float, boolean or out-of-range values are refused with the range and
    NaN count found (ldcodec does not guess whether floats mean [0, 1] or [0, 255]). Channels
    are converted as in :func:`load_png`, with a warning. The file is read without pickle, so
    it cannot run code.
    """
    c, h, w = shape
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise LdcodecError(f"{path}: a .npy array, not an .npz file with an 'images' array")
        with z:
            if "images" not in z.files:
                raise LdcodecError(f"{path}: no 'images' array (found {', '.join(z.files) or 'none'})")
            images = z["images"]
    except (OSError, ValueError, zlib.error, EOFError, zipfile.BadZipFile) as e:
        raise LdcodecError(f"{path}: not a readable .npz file with an 'images' array ({e})") from None
    if images.dtype.kind not in "iu":
        finite = images[np.isfinite(images)] if images.dtype.kind == "f" else images
        found = f", range [{finite.min()}, {finite.max()}]" if images.dtype.kind in "fb" and finite.size else ""
        nans = f", {int(np.isnan(images).sum())} NaN" if images.dtype.kind == "f" and np.isnan(images).any() else ""
        raise LdcodecError(f"{path}: images are {images.dtype}{found}{nans}; ldcodec reads integers 0..255 "
                           "(for floats in [0, 1]: np.round(x * 255).astype(np.uint8))")
    if images.size and (images.min() < 0 or images.max() > 255):
        raise LdcodecError(f"{path}: image values outside 0..255 (min {images.min()}, max {images.max()})")
    if images.ndim == 3 and images.shape[1:] == (h, w):
        images = images[..., None]
    if images.ndim != 4 or images.shape[1:3] != (h, w) or images.shape[3] not in (1, 3):
        hint = "; it looks like NCHW, transpose it to NHWC" if images.ndim == 4 and images.shape[2:] == (h, w) else ""
        raise LdcodecError(f"{path}: images have shape {images.shape}, the model needs (N, {h}, {w}, {c}) NHWC "
                           f"(or (N, {h}, {w}) grayscale){hint}")
    if len(images) == 0:
        raise LdcodecError(f"{path}: the 'images' array holds 0 images: nothing to compress")
    notes = []
    images = _fit_channels(images.astype(np.uint8), c, notes)
    for note in notes:
        _warn(f"{path}: {note}")
    return images


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

    The global batch ``k`` (``batch_size`` images) depends only on ``(seed, k)``
    (:func:`~ldcodec.seeds.batch_seed`) and the device that draws its indices, so a resumed run
    sees exactly the batches an uninterrupted run would have seen, whatever its process count.
    ``batches(k, rank, world)`` is the ``rank``-th of ``world`` equal slices of it (the split of a
    distributed sampler).

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
        g = torch.Generator(self.draw_device).manual_seed(batch_seed(self.seed, step))
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
