"""Every codec behind one contract (:mod:`ldcodec.codecs.base`) and one file format
(:mod:`ldcodec.codecs.container`), in a registry by name.

========== == ===================================================================================
name       id codec
========== == ===================================================================================
diffc      1  mode U: DiffC in the latent space of an LSGM model (a checkpoint without ``cond``), PFR steps
cdc        2  mode C: the conditional diffusion decoder (a checkpoint with ``cond.enabled``)
factorized 3  Ballé et al. 2017 factorised prior (:mod:`ldcodec.baselines.learned`)
hyperprior 4  Ballé et al. 2018 scale hyperprior
jpeg       5  JPEG through Pillow (:mod:`ldcodec.codecs.pillow`)
webp       6  WebP through Pillow
avif       7  AVIF through Pillow
diffc-dq   8  mode U with dithered quantisation (:class:`ldcodec.coding.dq.DQSimulator`), ``codec.simulator: dq``
========== == ===================================================================================

Python use (the README shows it)::

    from ldcodec.checkpoint import load_model
    from ldcodec.codecs import model_codec
    codec = model_codec(load_model("runs/m1")[0], "runs/m1")   # diffc or cdc, by the checkpoint's mode
    data = codec.frame(codec.compress(x, {"t_stop": 0.3}))   # x: (N, C, H, W) in [0, 1]
    y = codec.decompress_file(data, decode="realism")
"""

from __future__ import annotations

from ldcodec.errors import LdcodecError

CODECS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: add a :class:`~ldcodec.codecs.base.Codec` subclass under ``cls.name``."""
    taken = {c.codec_id: n for n, c in CODECS.items()}
    if cls.name in CODECS or cls.codec_id in taken:
        raise ValueError(f"codec {cls.name!r} (id {cls.codec_id}) clashes with a registered codec")
    from ldcodec.codecs.container import MAX_CODEC_ID

    if not 1 <= cls.codec_id <= MAX_CODEC_ID:
        raise ValueError(f"codec id {cls.codec_id} must fit the container's nibble (1..{MAX_CODEC_ID})")
    CODECS[cls.name] = cls
    return cls


def get_codec(name: str) -> type:
    """The codec class registered as ``name``; an unknown name lists the valid ones."""
    if name not in CODECS:
        raise LdcodecError(f"unknown codec {name!r}; choose one of: {', '.join(CODECS)}")
    return CODECS[name]


def codec_name(codec_id: int) -> str:
    """The registry name of container codec id ``codec_id`` (a damaged id says so)."""
    for name, cls in CODECS.items():
        if cls.codec_id == codec_id:
            return name
    raise LdcodecError(f"stream names codec id {codec_id}, which no registered codec has: it is damaged "
                       f"or from a newer ldcodec (known: {', '.join(f'{n}={c.codec_id}' for n, c in CODECS.items())})")


def simulator_codec(simulator: str) -> type:
    """The mode U codec class over the channel simulator named ``simulator`` (``codec.simulator``:
    ``pfr`` gives diffc, ``dq`` diffc-dq); an unknown name lists the valid ones."""
    from ldcodec.coding.simulator import get_simulator

    return get_codec(get_simulator(simulator).codec_name)


def model_codec(model, run_dir=None, device: str = "cpu", data_root=None, ideal_stride: int | None = None):
    """The codec of a trained LSGM model: ``cdc`` for a mode C (conditional) checkpoint, else the mode
    U codec of ``codec.simulator`` (``diffc`` or ``diffc-dq``) with the model's coding tables (read
    from ``run_dir``, or estimated from training latents and written there:
    :func:`ldcodec.codecs.diffc.load_or_build_tables`) and ``ideal_stride``
    (:class:`~ldcodec.codecs.diffc.DiffC`; None: its default)."""
    if model.cfg.cond.enabled:
        return get_codec("cdc")(model, device=device)
    from ldcodec.codecs.diffc import IDEAL_STRIDE, load_or_build_tables

    cls = simulator_codec(model.cfg.codec.simulator)
    return cls(model, load_or_build_tables(model, run_dir, data_root), device=device,
               ideal_stride=IDEAL_STRIDE if ideal_stride is None else ideal_stride)


def baselines() -> list[str]:
    """Names of the registered codecs ``evaluate --baseline`` can build from data alone."""
    return [name for name, cls in CODECS.items() if hasattr(cls, "for_sweep")]


def decode_names() -> tuple[str, ...]:
    """Every decode method some registered codec offers (``default`` excluded)."""
    names = dict.fromkeys(d for cls in CODECS.values() for d in cls.decodes if d != "default")
    return tuple(names)


# Registration: mode U once per channel simulator, then the others.
from ldcodec.codecs.diffc import DiffC  # noqa: E402
from ldcodec.coding.simulator import SIMULATORS, get_simulator  # noqa: E402

get_simulator("pfr")  # imports every built-in simulator
for _simulator in SIMULATORS.values():
    register(DiffC.bind(_simulator))
from ldcodec.codecs import cdc, balle, pillow  # noqa: E402,F401,I001

_in_id_order = sorted(CODECS.items(), key=lambda item: item[1].codec_id)
CODECS.clear()
CODECS.update(_in_id_order)
