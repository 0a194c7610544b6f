"""Learned densities for quantised codes, and their exact entropy coding (mode C, baselines).

- :class:`FactorizedDensity`: the non-parametric per-channel density of Ballé et al. 2018
  ("Variational image compression with a scale hyperprior"), Appendix 6.1.
- :class:`GaussianConditional`: ``N(mean, scale^2)`` convolved with ``U(-1/2, 1/2)``, with mean
  and scale from a hyperprior (Ballé et al. 2018, §3; the mean as in Minnen et al. 2018,
  "Joint autoregressive and hierarchical priors").
- :class:`AutoregressiveDensity`: a small learned prior on a whole code, ``p(y_i | y_<i)``
  Gaussian conditionals from a masked network (MADE); :func:`code_density` picks mode C's
  code density by name.
- :func:`quantize`: additive uniform noise for training (Ballé et al. 2017, "End-to-end
  optimized image compression"), rounding for coding, or rounding with a straight-through
  gradient.

Layout: ``y`` is ``(B, c)`` or ``(B, c, h, w)`` (any trailing dims); the channel axis is dim 1.

Coding: after training, :meth:`update_tables` computes integer tables ONCE (precision 16, every
count >= 1, an escape symbol for values outside the support; see :mod:`ldcodec.coding.range_coder`)
and stores them as buffers, so they travel in the checkpoint (and its hash) and the decoder
never recomputes a probability from floats. :meth:`compress` returns one byte string per batch
element. For the Gaussian conditional the scale is mapped to one of a fixed set of scale bins
by ``searchsorted`` of the float32 scale in the float32 bin table: exact whenever encoder and
decoder compute the same scale tensor (same CPU computation of the hyperprior).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ldcodec.coding import range_coder
from ldcodec.errors import LdcodecError

LIKELIHOOD_BOUND = 1e-9  # lower bound on likelihoods (keeps -log2 finite)
TABLE_PRECISION = 16
MAX_SUPPORT = 2**14  # symbols per table before the escape takes over


def quantize(y: torch.Tensor, mode: str, mean: torch.Tensor | None = None) -> torch.Tensor:
    """Quantise ``y`` (any shape) around ``mean`` (broadcastable, default 0).

    ``"noise"``: ``y + u``, ``u ~ U(-1/2, 1/2)`` (training proxy for rounding, Ballé 2017);
    ``"round"``: ``round(y - mean) + mean``; ``"ste"``: rounding with identity gradient.
    """
    if mode == "noise":
        return y + torch.empty_like(y).uniform_(-0.5, 0.5)
    offset = torch.zeros_like(y) if mean is None else mean
    rounded = torch.round(y - offset) + offset
    if mode == "round":
        return rounded
    if mode == "ste":
        return y + (rounded - y).detach()
    raise ValueError(f"unknown quantisation mode {mode!r}; use 'noise', 'round' or 'ste'")


def _bits_per_sample(likelihood: torch.Tensor) -> torch.Tensor:
    """``(B, ...) -> (B,)``: ``-sum log2 likelihood`` per batch element."""
    return -torch.log2(likelihood).reshape(likelihood.shape[0], -1).sum(dim=1)


class _TableBuffers(nn.Module):
    """Integer coding tables kept as buffers ``(T, S)`` counts, ``(T,)`` sizes and offsets.

    Buffers start empty; loading a checkpoint resizes them to the stored tables.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table_counts", torch.zeros(0, 0, dtype=torch.int32))
        self.register_buffer("table_sizes", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("table_offsets", torch.zeros(0, dtype=torch.int64))

    def _store(self, tables: range_coder.Tables) -> range_coder.Tables:
        self.table_counts = torch.from_numpy(tables.counts.astype(np.int32))
        self.table_sizes = torch.from_numpy(tables.sizes)
        self.table_offsets = torch.from_numpy(tables.offsets)
        return tables

    def tables(self) -> range_coder.Tables:
        """The stored integer tables (computed by ``update_tables``)."""
        if self.table_sizes.numel() == 0:
            raise LdcodecError(f"{type(self).__name__} has no coding tables: call update_tables() after training "
                               "(and save the checkpoint again)")
        return range_coder.Tables(self.table_counts.cpu().numpy().astype(np.uint32), self.table_sizes.cpu().numpy(),
                                  self.table_offsets.cpu().numpy(), TABLE_PRECISION)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("table_counts", "table_sizes", "table_offsets"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _encode_images(symbols: torch.Tensor, table_index: torch.Tensor, tables: range_coder.Tables) -> list[bytes]:
    """``(B, ...)`` integer symbols and table indices -> one stream per batch element."""
    sym = symbols.detach().cpu().reshape(symbols.shape[0], -1).numpy().astype(np.int64)
    idx = table_index.detach().cpu().reshape(symbols.shape[0], -1).numpy()
    return [range_coder.encode_symbols(s, i, tables) for s, i in zip(sym, idx)]


def _decode_images(strings: list[bytes], table_index: torch.Tensor, tables: range_coder.Tables) -> torch.Tensor:
    """Inverse of :func:`_encode_images` -> ``table_index.shape`` int64 symbols."""
    idx = table_index.detach().cpu().reshape(len(strings), -1).numpy()
    rows = [range_coder.decode_symbols(data, i, tables) for data, i in zip(strings, idx)]
    return torch.from_numpy(np.stack(rows)).reshape(table_index.shape)


def _channel_index(shape: tuple[int, ...]) -> torch.Tensor:
    """``(B, c, ...)`` tensor whose entries are their channel number."""
    c = shape[1]
    return torch.arange(c).reshape((1, c) + (1,) * (len(shape) - 2)).expand(shape)


class FactorizedDensity(_TableBuffers):
    """Per-channel learned density, Ballé et al. 2018, Appendix 6.1.

    The cumulative is ``c = f_K o ... o f_1`` with ``f_k(x) = g_k(H_k x + b_k)`` and
    ``g_k(x) = x + a_k * tanh(x)`` for ``k < K``, ``f_K(x) = sigmoid(H_K x + b_K)``,
    ``H_k = softplus(raw H_k)`` (so c is monotone) and ``a_k = tanh(raw a_k)`` (so g_k is).
    The density of a noisy or quantised value is ``c(y + 1/2) - c(y - 1/2)``: the density
    convolved with the unit uniform, evaluated at ``y``.

    Args:
        channels: ``c``.
        filters: widths of the hidden layers (paper: 3, 3, 3).
        init_scale: the initial density is roughly uniform over ``[-init_scale, init_scale]``.
        tail_mass: mass left outside the coding support (split between the two tails).
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0,
                 tail_mass: float = 1e-9) -> None:
        super().__init__()
        self.channels, self.tail_mass = channels, tail_mass
        widths = (1,) + tuple(filters) + (1,)
        scale = init_scale ** (1.0 / (len(widths) - 1))
        self.matrices, self.biases, self.factors = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for k in range(len(widths) - 1):
            init = math.log(math.expm1(1.0 / scale / widths[k + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, widths[k + 1], widths[k]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, widths[k + 1], 1).uniform_(-0.5, 0.5)))
            if k < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[k + 1], 1)))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(c, 1, n) -> (c, 1, n)``: the logits of the cumulative, ``c = sigmoid(logits)``.

        Evaluated in ``x``'s dtype and on ``x``'s device (tables are built in float64 on the CPU).
        """
        for k, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(F.softplus(matrix.to(x)), x) + bias.to(x)
            if k < len(self.factors):
                x = x + torch.tanh(self.factors[k].to(x)) * torch.tanh(x)
        return x

    def _per_channel(self, y: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """``(B, c, ...) -> (c, 1, B * prod(...))`` plus what is needed to undo it."""
        if y.dim() < 2 or y.shape[1] != self.channels:
            raise ValueError(f"expected (B, {self.channels}, ...) with channels on dim 1, got {tuple(y.shape)}")
        moved = y.transpose(0, 1)
        return moved.reshape(self.channels, 1, -1), moved.shape

    def _interval_mass(self, x: torch.Tensor) -> torch.Tensor:
        """``c(x + 1/2) - c(x - 1/2)`` for ``x`` ``(c, 1, n)``, evaluated in the tail where the
        sigmoids are small so that no precision is lost to ``1 - 1``."""
        lower, upper = self._logits(x - 0.5), self._logits(x + 0.5)
        sign = -torch.sign(lower + upper).detach()
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """``P(y) = c(y + 1/2) - c(y - 1/2)`` for ``y`` ``(B, c, ...)`` -> same shape, >= 1e-9."""
        x, moved_shape = self._per_channel(y)
        p = self._interval_mass(x).reshape(moved_shape).transpose(0, 1)
        return p.clamp_min(LIKELIHOOD_BOUND)

    def bits(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, c, ...) -> (B,)``: ``-sum log2 P(y)`` per batch element."""
        return _bits_per_sample(self.likelihood(y))

    @torch.no_grad()
    def update_tables(self) -> range_coder.Tables:
        """Compute and store the integer tables: per channel, the integers between the
        ``tail_mass / 2`` and ``1 - tail_mass / 2`` quantiles (found by bisection of the CDF)."""
        lo = torch.floor(self._quantiles(self.tail_mass / 2)).long()
        hi = torch.ceil(self._quantiles(1 - self.tail_mass / 2)).long()
        hi = torch.minimum(hi, lo + MAX_SUPPORT - 1)
        sizes = (hi - lo + 1).tolist()
        grid = lo.reshape(-1, 1, 1).double() + torch.arange(max(sizes), dtype=torch.float64)
        pmf = self._interval_mass(grid)[:, 0]
        pmfs = [row[:n].numpy() for row, n in zip(pmf, sizes)]
        return self._store(range_coder.Tables.from_pmfs(pmfs, lo.numpy(), TABLE_PRECISION))

    def _quantiles(self, level: float) -> torch.Tensor:
        """``(c,)`` float64 ``x`` with ``c(x) = level``, by bisection (the CDF is monotone)."""
        target = math.log(level / (1 - level))
        lo = torch.full((self.channels, 1, 1), -1.0, dtype=torch.float64)
        hi = torch.full((self.channels, 1, 1), 1.0, dtype=torch.float64)
        for _ in range(64):  # widen until the bracket holds (|x| up to 2**64)
            lo = torch.where(self._logits(lo) > target, 2 * lo, lo)
            hi = torch.where(self._logits(hi) < target, 2 * hi, hi)
        for _ in range(60):
            mid = (lo + hi) / 2
            below = self._logits(mid) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return ((lo + hi) / 2).reshape(-1)

    def compress(self, y: torch.Tensor) -> list[bytes]:
        """Integer-valued ``y`` ``(B, c, ...)`` -> one byte string per batch element."""
        return _encode_images(torch.round(y), _channel_index(y.shape), self.tables())

    def write(self, encoder, y: torch.Tensor) -> None:
        """Append integer-valued ``y`` ``(B, c, ...)`` to a range ``encoder``, element after element."""
        range_coder.write_symbols(encoder, torch.round(y).detach().cpu().reshape(-1).numpy().astype(np.int64),
                                  _channel_index(y.shape).reshape(-1).numpy(), self.tables())

    def coded_bits(self, y: torch.Tensor) -> np.ndarray:
        """``(B,)`` information content of each element of integer-valued ``y`` ``(B, c, ...)`` under the
        integer tables :meth:`write` codes with (what the range coder spends, before its flush)."""
        values = torch.round(y).detach().cpu().reshape(len(y), -1).numpy().astype(np.int64)
        index, tables = _channel_index(y.shape).reshape(len(y), -1).numpy(), self.tables()
        return np.array([range_coder.symbols_bits(v, i, tables) for v, i in zip(values, index)])

    def decodes_to(self, decoder, y: torch.Tensor) -> bool:
        """Whether ``decoder`` reads back the integer-valued ``y`` ``(B, c, ...)`` (:meth:`read`)."""
        return torch.equal(self.read(decoder, len(y), tuple(y.shape[1:])), torch.round(y).to(torch.get_default_dtype()))

    def read(self, decoder, count: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Inverse of :meth:`write` for ``count`` elements of shape ``(c, ...)`` -> ``(count, c, ...)`` float."""
        index = _channel_index((count,) + tuple(shape))
        symbols = range_coder.read_symbols(decoder, index.reshape(-1).numpy(), self.tables())
        return torch.from_numpy(symbols).reshape(index.shape).to(torch.get_default_dtype())

    def decompress(self, strings: list[bytes], shape: tuple[int, ...]) -> torch.Tensor:
        """Inverse of :meth:`compress`; ``shape`` is one element's ``(c, ...)`` -> ``(B, c, ...)`` float."""
        index = _channel_index((len(strings),) + tuple(shape))
        return _decode_images(strings, index, self.tables()).to(torch.get_default_dtype())


class GaussianConditional(_TableBuffers):
    """``N(mean, scale^2) * U(-1/2, 1/2)`` at integer offsets from ``mean`` (Ballé 2018, §3).

    Args:
        scale_bound: scales are clamped below at this value (likelihood and bin choice).
        scale_table: increasing float scales of the coding bins; default 64 log-spaced scales
            from 0.11 to 256.
        tail_mass: mass left outside each bin's support.
    """

    def __init__(self, scale_bound: float = 0.11, scale_table: np.ndarray | None = None,
                 tail_mass: float = 1e-9) -> None:
        super().__init__()
        if scale_table is None:
            scale_table = np.exp(np.linspace(math.log(0.11), math.log(256.0), 64))
        self.scale_bound, self.tail_mass = scale_bound, tail_mass
        self.register_buffer("scale_table", torch.as_tensor(np.asarray(scale_table), dtype=torch.float32))

    @staticmethod
    def _cdf(x: torch.Tensor) -> torch.Tensor:
        """Standard normal CDF, ``erfc`` form (accurate in the lower tail)."""
        return 0.5 * torch.erfc(-x / math.sqrt(2.0))

    def likelihood(self, y: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        """``P(y)`` for ``y``, ``scale``, ``mean`` of one shape ``(B, c, ...)`` -> same shape, >= 1e-9."""
        v = torch.abs(y - mean) if mean is not None else torch.abs(y)
        scale = scale.clamp_min(self.scale_bound)
        return self._interval_mass(v, scale).clamp_min(LIKELIHOOD_BOUND)

    def _interval_mass(self, v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Mass of ``[v - 1/2, v + 1/2]`` under ``N(0, scale^2)`` for ``v >= 0``, from the lower tail."""
        return self._cdf((0.5 - v) / scale) - self._cdf((-0.5 - v) / scale)

    def bits(self, y: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, ...) -> (B,)``: ``-sum log2 P(y)`` per batch element."""
        return _bits_per_sample(self.likelihood(y, scale, mean))

    def scale_index(self, scale: torch.Tensor) -> torch.Tensor:
        """Bin of each scale: the smallest table scale >= the (clamped) scale, in float32 -> int64."""
        s = scale.detach().to("cpu", torch.float32).clamp_min(self.scale_bound).contiguous()
        table = self.scale_table.to("cpu").contiguous()
        return torch.searchsorted(table, s).clamp_max(len(table) - 1)

    @torch.no_grad()
    def update_tables(self) -> range_coder.Tables:
        """Compute and store one integer table per scale bin over ``[-r, r]``, ``r`` the
        ``1 - tail_mass / 2`` quantile of ``N(0, scale^2)`` rounded up."""
        z = -float(torch.special.ndtri(torch.tensor(self.tail_mass / 2, dtype=torch.float64)))
        pmfs, offsets = [], []
        for s in self.scale_table.double():
            r = min(int(math.ceil(float(s) * z)), MAX_SUPPORT // 2)
            grid = torch.arange(-r, r + 1, dtype=torch.float64)
            pmfs.append(self._interval_mass(grid.abs(), s).numpy())
            offsets.append(-r)
        return self._store(range_coder.Tables.from_pmfs(pmfs, np.array(offsets), TABLE_PRECISION))

    def compress(self, y: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor | None = None) -> list[bytes]:
        """Code ``round(y - mean)`` with the bin of ``scale``; all ``(B, c, ...)`` -> one string per element."""
        centred = y if mean is None else y - mean
        return _encode_images(torch.round(centred), self.scale_index(scale), self.tables())

    def decompress(self, strings: list[bytes], scale: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        """Inverse of :meth:`compress` -> ``symbols + mean`` with ``scale``'s shape ``(B, c, ...)``."""
        symbols = _decode_images(strings, self.scale_index(scale), self.tables()).to(scale.dtype)
        return symbols if mean is None else symbols + mean.to(symbols.device)


class _MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 mask ``(out, in)``."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class AutoregressiveDensity(nn.Module):
    """A learned prior on a small code: ``p(y) = prod_i p(y_i | y_1 .. y_{i-1})``.

    The ``n = prod(shape)`` entries of one code ``(B, *shape)`` are taken in row-major order.
    Entry ``i`` is coded with ``N(m_i, s_i^2) * U(-1/2, 1/2)`` (the :class:`GaussianConditional`
    and its integer tables), where ``m_i`` (rounded to an integer, straight-through in training,
    so that training, the estimate and the coder use one density) and ``log s_i`` come from a
    MADE network (Germain et al. 2015, "MADE: Masked autoencoder for distribution estimation"):
    masked linear layers in which output ``i`` sees only the inputs before it. Unlike the
    factorised density it spends no bits on what one entry says about the next.

    Coding is entry-major over a batch of codes: the encoder gets every entry's density from one
    network call on the whole codes (MADE's masks give the later entries exact zero weight), the
    decoder from one call per entry on the codes decoded so far, of the same shape; the masked-out
    inputs add exact zeros, so both sides choose the same tables on the same machine.

    Args:
        shape: one code's shape, e.g. ``(16,)`` or ``(2, 4, 4)``.
        hidden: width of the MADE's hidden layers.
        depth: number of hidden layers.
    """

    def __init__(self, shape: tuple[int, ...], hidden: int = 64, depth: int = 2, init_scale: float = 5.0) -> None:
        super().__init__()
        self.shape, self.n = tuple(shape), math.prod(shape)
        n = self.n
        degree_in = torch.arange(1, n + 1)
        degree_hidden = 1 + torch.arange(hidden) % max(1, n - 1)
        layers: list[nn.Module] = []
        before = degree_in
        for _ in range(depth):
            layers += [_MaskedLinear(degree_hidden[:, None] >= before[None, :]), nn.SiLU()]
            before = degree_hidden
        out = _MaskedLinear(torch.cat([degree_in, degree_in])[:, None] > before[None, :])
        nn.init.zeros_(out.weight)
        with torch.no_grad():
            out.bias[:n] = 0.0
            out.bias[n:] = math.log(init_scale)
        self.net = nn.Sequential(*layers, out)
        self.gaussian = GaussianConditional()

    def _flat(self, y: torch.Tensor) -> torch.Tensor:
        if tuple(y.shape[1:]) != self.shape:
            raise ValueError(f"expected codes (B, {', '.join(map(str, self.shape))}), got {tuple(y.shape)}")
        return y.reshape(y.shape[0], self.n)

    def _params(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, n)`` codes -> integer means (straight-through) and scales ``(B, n)`` of each entry."""
        mean, log_scale = self.net(flat).chunk(2, dim=1)
        return mean + (torch.round(mean) - mean).detach(), torch.exp(log_scale.clamp(-10.0, 10.0))

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """``P(y_i | y_<i)`` for noisy or integer ``y`` ``(B, *shape)`` -> same shape, >= 1e-9."""
        flat = self._flat(y)
        mean, scale = self._params(flat)
        return self.gaussian.likelihood(flat, scale, mean).reshape(y.shape)

    def bits(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, *shape) -> (B,)``: ``-sum log2 P(y)`` per code."""
        return _bits_per_sample(self.likelihood(y))

    @torch.no_grad()
    def update_tables(self) -> range_coder.Tables:
        """The Gaussian conditional's integer tables (one per scale bin; they do not depend on the MADE)."""
        return self.gaussian.update_tables()

    @torch.no_grad()
    def _coding_params(self, context: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(B, n)`` codes (entries after those already known may be anything: the MADE's masks give
        them exact zero weight) -> the integer offsets and scale-table indices ``(B, n)`` of every
        entry's coding density."""
        device = self.net[-1].weight.device
        mean, scale = self._params(context.to(device, torch.float32))
        return mean.round().long().cpu().numpy(), self.gaussian.scale_index(scale).numpy().reshape(mean.shape)

    def write(self, encoder, y: torch.Tensor) -> None:
        """Append integer codes ``y`` ``(B, *shape)`` to a range ``encoder``, entry-major (entry 0 of every
        code, then entry 1, ...): the encoder knows every code, so one MADE call gives all the
        conditionals, and the decoder reads one entry of every code per call."""
        flat = torch.round(self._flat(y)).detach().cpu()
        offsets, index = self._coding_params(flat)
        values, tables = flat.numpy().astype(np.int64), self.gaussian.tables()
        for i in range(self.n):
            range_coder.write_symbols(encoder, values[:, i] - offsets[:, i], index[:, i], tables)

    def read(self, decoder, count: int, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Inverse of :meth:`write` for ``count`` codes (of ``shape``, which must be the density's) ->
        ``(count, *shape)`` float: ``n`` MADE calls, one per entry, each on every code."""
        if shape is not None and tuple(shape) != self.shape:
            raise LdcodecError(f"this density codes shape {self.shape}, not {tuple(shape)}")
        tables, context = self.gaussian.tables(), torch.zeros(count, self.n)
        for i in range(self.n):
            offsets, index = self._coding_params(context)
            context[:, i] = torch.from_numpy(range_coder.read_symbols(decoder, index[:, i], tables) + offsets[:, i]).float()
        return context.reshape(count, *self.shape)

    def coded_bits(self, y: torch.Tensor) -> np.ndarray:
        """``(B,)`` information content of each code ``y`` ``(B, *shape)`` under the integer tables
        :meth:`write` codes with (what the range coder spends, before its flush)."""
        flat = torch.round(self._flat(y)).detach().cpu()
        offsets, index = self._coding_params(flat)
        values, tables = flat.numpy().astype(np.int64) - offsets, self.gaussian.tables()
        return np.array([range_coder.symbols_bits(v, i, tables) for v, i in zip(values, index)])

    def decodes_to(self, decoder, y: torch.Tensor) -> bool:
        """Whether ``decoder`` reads back the codes ``y`` ``(B, *shape)``: the entries are read with the
        densities ``y`` itself implies (if every entry before ``i`` matches, so does entry ``i``'s
        density), so no entry-by-entry network calls are needed. For the shortest-stream search."""
        flat = torch.round(self._flat(y)).detach().cpu()
        offsets, index = self._coding_params(flat)
        values, tables = flat.numpy().astype(np.int64), self.gaussian.tables()
        return all(np.array_equal(range_coder.read_symbols(decoder, index[:, i], tables), values[:, i] - offsets[:, i])
                   for i in range(self.n))


CODE_DENSITIES = {
    "factorized": lambda shape: FactorizedDensity(shape[0]),
    "autoregressive": lambda shape: AutoregressiveDensity(shape),
}


def code_density(name: str, shape: tuple[int, ...]) -> nn.Module:
    """The density named ``name`` for codes of one image's ``shape`` (channels first)."""
    if name not in CODE_DENSITIES:
        raise LdcodecError(f"unknown code density {name!r}; valid names: {', '.join(CODE_DENSITIES)}")
    return CODE_DENSITIES[name](tuple(shape))
