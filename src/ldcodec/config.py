"""Typed experiment configuration: YAML files, ``--set section.key=value`` overrides, validation.

A config file is YAML with one mapping per section (``data``, ``model``, ``diffusion``,
``cond``, ``train``, ``codec``). A file may name a parent with ``base: other.yaml`` (path relative
to the file); the child's keys override the parent's. Unknown sections or keys and values of the
wrong type or outside their choices raise :class:`LdcodecError` listing the valid ones.

The resolved config (``Config.to_dict()``) is saved beside every checkpoint and rebuilds the
model exactly (``Config.from_dict``).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import LdcodecError
from .files import write_text_atomic


def _choice(default: str, *choices: str):
    return field(default=default, metadata={"choices": choices})


def _num(default: int | float, lo: int | float, hi: int | float):
    """A number valid in ``[lo, hi]``: the bounds keep a config (perhaps from a shared checkpoint)
    from building an absurd model, e.g. a schedule of 10**12 steps allocated before anything else."""
    return field(default=default, metadata={"range": (lo, hi)})


SIZE = 2**16  # largest width, channel count or code size a config may ask for


@dataclass
class DataConfig:
    """Which images to train on."""

    dataset: str = _choice("mnist", "mnist", "cifar10")
    root: str = ""  # folder of .npz shards (DIR/mnist/train-00.npz ...); "" = $LDCODEC_DATA or built-in sample
    flip: bool = True  # random horizontal flips (applied to CIFAR-10 only: digits are not symmetric)


@dataclass
class ModelConfig:
    """The autoencoder and the kind of latent prior."""

    net: str = _choice("mlp", "mlp", "cnn")
    latent: str = _choice("gauss", "gauss", "delta")
    prior: str = _choice("diffusion", "diffusion", "normal")
    latent_dim: int = _num(16, 1, SIZE)  # MLP: size of the vector latent (B, d)
    latent_channels: int = _num(4, 1, SIZE)  # CNN: channels of the spatial latent (B, C, h, w)
    hidden: int = _num(512, 1, SIZE)  # MLP hidden width
    depth: int = _num(2, 1, 64)  # MLP hidden layers
    channels: int = _num(64, 1, SIZE)  # CNN base channels
    downsample: int = _num(2, 0, 8)  # CNN stride-2 stages: 28 -> 7 (MNIST), 32 -> 8 (CIFAR-10)
    channel_mult: int = _num(1, 1, 8)  # CNN: each stride-2 stage multiplies the channels by this (cheap at full size, wide at the latent's)
    x_sigma: float = _num(0.1, 1e-6, 1e3)  # std of the Gaussian decoder p(x|z) on [0, 1] pixels (fixed variance)
    logvar_min: float = -12.0  # clamp of the Gaussian encoder's log-variance


@dataclass
class DiffusionConfig:
    """The LSGM latent prior (Vahdat et al. 2021) and its noise process."""

    family: str = _choice("ddpm", "sde", "ddpm")
    sde: str = _choice("vp", "vp", "subvp", "ve")  # used when family = sde
    num_steps: int = _num(1000, 1, 10**6)  # DDPM: discrete steps N
    schedule: str = _choice("linear", "linear", "cosine")  # DDPM beta schedule
    weighting: str = _choice("likelihood", "likelihood", "unweighted")  # unweighted needs train.two_stage
    importance: str = _choice("log_snr", "log_snr", "normal", "uniform")  # sampling of t for the bound
    mixed: bool = True  # mixed score: N(0,I)^(1-a) p_theta^a
    hidden: int = _num(512, 1, SIZE)  # MLP denoiser width
    depth: int = _num(3, 1, 64)  # MLP denoiser depth
    unet_channels: int = _num(64, 1, SIZE)  # U-Net denoiser base channels


@dataclass
class CondConfig:
    """Mode C: the conditional diffusion decoder p_theta(z0 | y) and the sent code y."""

    enabled: bool = False
    code_dim: int = _num(8, 1, SIZE)  # MLP: size of the code y
    code_channels: int = _num(2, 1, SIZE)  # CNN: channels of the spatial code y
    lam: float = _num(1.0, 0.0, 1e6)  # weight of the code's rate (bits) in the loss
    drop: float = _num(0.1, 0.0, 1.0)  # condition dropout (classifier-free guidance)
    density: str = field(default="factorized", metadata={  # the code's density (coding/entropy_models.py)
        "choices": ("factorized", "autoregressive"), "omit_default": True})


@dataclass
class TrainConfig:
    """Optimisation (AdamW, warm-up + cosine schedule, clipping, EMA)."""

    steps: int = _num(20000, 0, 10**9)
    batch_size: int = _num(128, 1, SIZE)
    lr: float = _num(1e-3, 0.0, 10.0)
    weight_decay: float = _num(1e-4, 0.0, 10.0)
    warmup: int = _num(500, 0, 10**9)
    grad_clip: float = _num(1.0, 0.0, 1e6)
    ema: float = _num(0.999, 0.0, 1.0)
    seed: int = 0
    log_every: int = _num(50, 1, 10**9)
    ckpt_every: int = _num(1000, 1, 10**9)
    two_stage: bool = False  # train the autoencoder first, then the prior on frozen latents
    stage1_steps: int = _num(0, 0, 10**9)  # two_stage: autoencoder-only steps


@dataclass
class CodecConfig:
    """Compression settings (mode U reverse channel coding)."""

    coding_steps: int = _num(0, 0, 64)  # mode U: coded steps from t = 1 to the stop time (0: the number with the least predicted cost)
    max_chunk_bits: int = _num(12, 1, 20)  # mode U: largest expected KL of one PFR chunk, bits (encoder cost ~ d 2^(bits+pad))
    pad: int = _num(6, 0, 10)  # mode U: log2 candidates per chunk beyond its expected KL (exactness vs encoder time)
    simulator: str = field(default="pfr", metadata={  # mode U: channel simulator of a coding step, pfr (codec diffc) or dq (dithered quantisation, codec diffc-dq)
        "choices": ("pfr", "dq"), "omit_default": True})


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "diffusion": DiffusionConfig,
    "cond": CondConfig,
    "train": TrainConfig,
    "codec": CodecConfig,
}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    cond: CondConfig = field(default_factory=CondConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every key, except those marked ``omit_default`` while at their default: keys added after
        models were trained, so that those models' configs, and the hashes over them, stay the same."""
        d = dataclasses.asdict(self)
        for section in SECTIONS:
            for f in dataclasses.fields(getattr(self, section)):
                if f.metadata.get("omit_default") and d[section][f.name] == f.default:
                    del d[section][f.name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> Config:
        if not isinstance(d, dict):
            raise LdcodecError(f"{source}: a config must be a mapping of sections, got {type(d).__name__}")
        cfg = cls()
        for section, values in d.items():
            if section not in SECTIONS:
                raise LdcodecError(
                    f"{source}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}"
                )
            if not isinstance(values, dict):
                raise LdcodecError(f"{source}: section {section!r} must be a mapping of key: value")
            for key, value in values.items():
                _assign(cfg, section, key, value, source)
        return cfg

    @property
    def name(self) -> str:
        """Grid-cell name, e.g. ``mnist-mlp-ddpm-uncond-gauss``."""
        family = self.diffusion.family if self.model.prior == "diffusion" else "normal"
        mode = "cond" if self.cond.enabled else "uncond"
        return f"{self.data.dataset}-{self.model.net}-{family}-{mode}-{self.model.latent}"


def _assign(cfg: Config, section: str, key: str, value: Any, source: str) -> None:
    obj = getattr(cfg, section)
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if key not in fields:
        raise LdcodecError(
            f"{source}: unknown key {section}.{key}; valid keys: "
            + ", ".join(f"{section}.{k}" for k in fields)
        )
    f = fields[key]
    setattr(obj, key, _coerce(value, typing.get_type_hints(type(obj))[key], f, f"{section}.{key}", source))


def _coerce(value: Any, typ: type, f: dataclasses.Field, name: str, source: str) -> Any:
    if isinstance(value, str) and typ is not str:
        value = _parse_scalar(value)
    if typ is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    ok = (
        (typ is bool and isinstance(value, bool))
        or (typ is int and isinstance(value, int) and not isinstance(value, bool))
        or (typ is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (typ is str and isinstance(value, str))
    )
    if not ok:
        raise LdcodecError(f"{source}: {name} must be a {typ.__name__}, got {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise LdcodecError(f"{source}: {name} = {value!r} is not valid; choose one of: {', '.join(choices)}")
    lo, hi = f.metadata.get("range", (None, None))
    if lo is not None and not lo <= value <= hi:  # also refuses NaN
        raise LdcodecError(f"{source}: {name} = {value!r} is outside its valid range [{lo}, {hi}]")
    return float(value) if typ is float else value


def _parse_scalar(text: str) -> Any:
    for parse in (int, float):  # YAML 1.1 reads "3e-4" as a string
        try:
            return parse(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise LdcodecError(f"{path}: config files include each other in a loop")
    if not path.is_file():
        raise LdcodecError(f"config file {path} not found; grid configs live in configs/grid/")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise LdcodecError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise LdcodecError(f"{path}: a config must be a mapping of sections")
    parent = raw.pop("base", None)
    if parent is None:
        return raw
    merged = _read_yaml(path.parent / parent, seen + (path,))
    for section, values in raw.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def check_consistency(cfg: Config, source: str) -> Config:
    """Cross-key rules that single values cannot express."""
    if cfg.diffusion.weighting == "unweighted" and not cfg.train.two_stage:
        raise LdcodecError(f"{source}: diffusion.weighting=unweighted is not an ELBO for the encoder; use it with "
                           f"train.two_stage=true (the prior then trains on frozen latents) or keep likelihood")
    if cfg.cond.enabled and cfg.model.prior != "diffusion":
        raise LdcodecError(f"{source}: cond.enabled=true (mode C) needs model.prior=diffusion")
    return cfg


def parse_override(text: str) -> tuple[str, str, str]:
    """``"train.lr=3e-4"`` -> ``("train", "lr", "3e-4")``."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise LdcodecError(f"--set {text!r}: write overrides as section.key=value, e.g. train.lr=3e-4")
    lhs, value = text.split("=", 1)
    section, key = lhs.split(".", 1)
    return section.strip(), key.strip(), value.strip()


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (with its ``base`` chain) and apply ``section.key=value`` overrides."""
    cfg = Config.from_dict(_read_yaml(Path(path)), source=str(path)) if path else Config()
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in SECTIONS:
            raise LdcodecError(f"--set {text}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}")
        _assign(cfg, section, key, value, "--set")
    return check_consistency(cfg, str(path) if path else "config")


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def portable_config(cfg: Config | dict) -> dict[str, dict[str, Any]]:
    """The resolved config (a :class:`Config` or its ``to_dict()``) without this machine's paths
    (``data.root``), as a new dict: what model ids (:mod:`ldcodec.codecs.identity`), ``--resume``'s
    same-run check and sweep-cell hashes compare, so that moving the data changes none of them."""
    d = cfg.to_dict() if isinstance(cfg, Config) else {s: dict(v) for s, v in cfg.items()}
    d.get("data", {}).pop("root", None)
    for (section, key), neutral in NEUTRAL_KEYS.items():
        if d.get(section, {}).get(key, neutral) == neutral:
            d.get(section, {}).pop(key, None)
    return d


# Keys added after models were trained and streams written, each with the value that reproduces the
# behaviour from before it existed: :func:`portable_config` leaves such a key out at that value, so
# the ids of existing checkpoints and the committed reference streams stay valid.
NEUTRAL_KEYS: dict[tuple[str, str], Any] = {("model", "channel_mult"): 1}
