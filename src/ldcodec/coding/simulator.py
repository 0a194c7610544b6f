"""Mode U's channel simulators: how one coding step ``z_u -> z_s`` of the DiffC chain is sent.

DiffC (Theis et al. 2022) sends the noisy latent ``z_t`` as a chain of reverse steps on the coding
levels (:mod:`ldcodec.diffusion.coding_grid`). Each step must deliver to the decoder an (exact or
near-exact) sample of the forward posterior ``q(z_s | z_u, z0) = N(mu_q, var_q I)`` while paying
about ``KL(q || p)`` bits against the model's reverse density ``p(z_s | z_u) = N(mu_p, diag var_p)``
(docs/design.md §2). A *channel simulator* is the procedure that does it; the codec
(:class:`ldcodec.codecs.diffc.DiffC`) owns everything else: the chain, the densities, the header,
one range coder per file.

Every simulator implements :class:`ChannelSimulator`:

- what a step is predicted to cost, for the coding grid's dynamic programme (:meth:`~ChannelSimulator.cost`),
- its integer plan of a step, derived identically by both sides (:meth:`~ChannelSimulator.plan`),
- encode and decode of a step for the ``N`` images of a file (:meth:`~ChannelSimulator.encode`,
  :meth:`~ChannelSimulator.decode`),
- how a step's symbols are written to and read from the file's range coder
  (:meth:`~ChannelSimulator.write`, :meth:`~ChannelSimulator.read`, :meth:`~ChannelSimulator.matches`).

Implementations, in :data:`SIMULATORS` by their ``codec.simulator`` name: ``pfr``, the Poisson
functional representation over shared candidates (:class:`ldcodec.coding.pfr.PFRSimulator`, codec
``diffc``, container id 1), and ``dq``, dithered quantisation (:class:`ldcodec.coding.dq.DQSimulator`,
codec ``diffc-dq``, id 8). A stream's codec id names its simulator.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ldcodec.diffusion.coding_grid import LEVELS, CodingTables, StepCost
from ldcodec.errors import LdcodecError

Tensor = torch.Tensor


def step_word(a: int, b: int) -> int:
    """The format generator's step word of the coding step ``level a -> level b``."""
    return a * (LEVELS + 1) + b


@dataclass
class Step:
    """Both sides' view of the coding step ``level a -> level b`` for the ``N`` images of a file.

    Built by the codec from the decoded ``z_u`` (the encoder's and the decoder's are the same):
    ``q = N(base + c0 z0, var_q I)`` and ``p = N(base + c0 z0_hat, diag var_p)``.

    Attributes:
        a, b: the step's levels.
        plan: the simulator's integer plan of the step (:meth:`ChannelSimulator.plan`).
        key: the stream key of the format's generator (:func:`ldcodec.coding.candidates.stream_key`).
        images: ``(N,)`` int64, the images' indices in the file (keys of their shared randomness).
        base: ``(N, d)`` float64, ``coef_zu z_u``.
        c0: ``coef_z0``.
        z0_hat: ``(N, d)`` float64, the denoiser's ``E[z0 | z_u]``.
        var_q: the forward posterior's variance.
        var_p: ``(d,)`` float64, the reverse density's variances (Analytic-DPM).
    """

    a: int
    b: int
    plan: Any
    key: int
    images: Tensor
    base: Tensor
    c0: float
    z0_hat: Tensor
    var_q: float
    var_p: Tensor

    @property
    def word(self) -> int:
        return step_word(self.a, self.b)

    @property
    def mu_p(self) -> Tensor:
        """``(N, d)`` the model's mean (a new tensor on each access)."""
        return self.base + self.c0 * self.z0_hat

    def mu_q(self, z0: Tensor) -> Tensor:
        """``(N, d)`` the forward posterior's mean for latents ``z0`` ``(N, d)``."""
        return self.base + self.c0 * z0


@dataclass
class Encoded:
    """What :meth:`ChannelSimulator.encode` returns for one step of ``N`` images.

    ``z``: ``(N, d)`` float64, the sample both sides continue from; ``symbols``: the simulator's
    symbols of the step (an object with ``rows(slice)``); ``bits``: ``(N,)`` float64, the step's
    estimated bits per image; ``stats``: sums the simulator turns into diagnostics
    (:meth:`ChannelSimulator.summary`), added up over the steps by the codec.
    """

    z: Tensor
    symbols: Any
    bits: Tensor
    stats: dict[str, float]


@dataclass
class Chain:
    """The symbols of every coding step of a file: ``steps[k]`` for step ``k``, ``count`` images."""

    steps: list
    count: int

    def rows(self, rows: slice) -> Chain:
        """The symbols of images ``rows`` alone (a file holding those images)."""
        return Chain([s.rows(rows) for s in self.steps], len(range(*rows.indices(self.count))))


class ChannelSimulator(abc.ABC):
    """One way to send a DiffC coding step (module docstring).

    Class attributes: ``name`` (the ``codec.simulator`` config value), ``codec_name`` and
    ``codec_id`` (the mode U codec's registry name and container id over this simulator),
    ``coding_dtype`` (the dtype the coding denoiser runs in: a simulator whose symbols depend on the
    denoiser's output bit for bit needs float64).
    """

    name: ClassVar[str]
    codec_name: ClassVar[str]
    codec_id: ClassVar[int]
    coding_dtype: ClassVar[torch.dtype] = torch.float32

    def __init__(self, max_chunk_bits: int, pad: int):
        """``max_chunk_bits`` and ``pad``: ``codec.max_chunk_bits`` and ``codec.pad`` of the config
        (simulators that do not use them ignore them)."""

    @abc.abstractmethod
    def cost(self) -> StepCost:
        """How the coding grid prices a step of this simulator (:class:`StepCost`)."""

    @abc.abstractmethod
    def plan(self, tables: CodingTables, a: int, b: int) -> Any:
        """The integer plan of the step ``a -> b``, the same on every machine (``None`` if none)."""

    @abc.abstractmethod
    def encode(self, step: Step, z0: Tensor, generator: torch.Generator) -> Encoded:
        """Send ``z_s ~ q(z_s | z_u, z0)`` for latents ``z0`` ``(N, d)`` float64. ``generator``: the
        encoder's private randomness (never needed to decode)."""

    @abc.abstractmethod
    def decode(self, step: Step, symbols: Any) -> Tensor:
        """The step's ``z_s`` ``(N, d)`` float64 from its symbols: the encoder's ``Encoded.z``."""

    @abc.abstractmethod
    def write(self, encoder, symbols: Any) -> None:
        """Append a step's symbols to a range encoder."""

    @abc.abstractmethod
    def read(self, decoder, step: Step, count: int) -> Any:
        """Read a step's symbols of ``count`` images from a range decoder (the inverse of :meth:`write`)."""

    @abc.abstractmethod
    def matches(self, decoder, symbols: Any) -> bool:
        """Whether ``decoder`` reads back exactly ``symbols`` (for the shortest verified stream)."""

    def summary(self, stats: dict[str, float], count: int) -> dict[str, float]:
        """The diagnostics of a file's chain from its steps' summed ``stats`` (none by default)."""
        return {}


SIMULATORS: dict[str, type[ChannelSimulator]] = {}


def register_simulator(cls: type[ChannelSimulator]) -> type[ChannelSimulator]:
    """Class decorator: add a simulator under ``cls.name``."""
    if cls.name in SIMULATORS:
        raise ValueError(f"channel simulator {cls.name!r} is registered twice")
    SIMULATORS[cls.name] = cls
    return cls


def get_simulator(name: str) -> type[ChannelSimulator]:
    """The simulator class registered as ``name``; an unknown name lists the valid ones."""
    from ldcodec.coding import dq, pfr  # noqa: F401  (they register themselves)

    if name not in SIMULATORS:
        raise LdcodecError(f"unknown channel simulator {name!r} (codec.simulator); choose one of: "
                           f"{', '.join(SIMULATORS)}")
    return SIMULATORS[name]
