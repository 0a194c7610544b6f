"""The hyperprior's scale bins from integer arithmetic only (after Ballé, Johnston & Minnen 2019,
"Integer networks for data compression with latent-variable models").

Why: each ``y`` symbol of the scale-hyperprior codec is coded with the table of its scale bin,
and the scale comes from the synthesis network ``h_s(z_hat)``. A float ``h_s`` can differ in its
last bits between CPUs (SIMD width, BLAS blocking and summation order, FMA), and a scale that
lies near a bin edge then selects another table in the decoder than in the encoder: the rest
of the stream decodes to garbage. Ballé et al. 2019 make the network that feeds the entropy
model integer, so that encoder and decoder compute the same thing on any machine.

What :class:`IntegerScaleNet` does (a fixed-point conversion of the trained float ``h_s``,
made once by :meth:`IntegerScaleNet.update`, i.e. by
:meth:`ldcodec.baselines.learned.HyperpriorModel.update_tables`):

- weights become integers ``W_q = round(W * 2**WEIGHT_BITS)``; the input ``z_hat`` is integer
  (clamped to ``[-Z_MAX, Z_MAX]``), hidden activations are integers on the grid
  ``2**-ACTIVATION_BITS``; a layer's bias is rounded onto its output's grid;
- each conv (or transposed conv) is evaluated on int64 tensors: no rounding at all, so the
  result is the same whatever the summation order; :meth:`update` proves from the weights that
  no partial sum can reach ``2**62`` (and refuses weights for which it cannot);
- ReLU and re-quantisation: ``a = min((max(u, 0) + 2**(r - 1)) >> r, A_MAX)``, integer;
- the final softplus is never evaluated at coding time: it is monotone, so the scale bin edges
  ``s_k`` are moved into the integer domain once, ``t_k = floor(softplus^-1(s_k) * 2**F)``,
  and the bin of an output ``u`` is ``#{k : t_k < u}`` (clamped to the last bin), which is
  ``searchsorted(scale_table, softplus(u / 2**F))`` of the float codec evaluated exactly.

Guaranteed: given the stored integer buffers (they are part of the codec's state), the bin
indices are an exact integer function of ``z_hat``: identical across machines, thread counts
and library versions, and unchanged by any last-bit change of the float ``h_s``. Not
guaranteed: that they equal the float ``h_s``'s bins (the fixed-point error, about ``2**-12``
in the activations, moves a few scales to a neighbouring bin; that costs a little rate, never
correctness: ``forward``'s rate estimate still uses the float network); and the reconstruction
``g_s(y_hat)`` is float, so decoded pixels may differ in their last bits between machines
(they are not entropy coded). The conversion is post-training; Ballé et al. 2019 also train
through the quantisation, which this baseline does not need at 16-bit weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ldcodec.errors import LdcodecError

WEIGHT_BITS = 16  # fractional bits of the integer weights
ACTIVATION_BITS = 12  # fractional bits of the hidden activations
Z_MAX = 2**15  # |z_hat| fed to the network (larger side information is clamped, identically at both ends)
A_MAX = 2**27  # largest hidden activation integer (2**15 in real units)
SUM_LIMIT = 2**62  # no pre-activation may reach this (int64 headroom)


class IntegerScaleNet(nn.Module):
    """Scale-bin indices ``(1, M, h, w)`` int64 of integer ``z_hat`` ``(1, N, h/4, w/4)``, exactly.

    Built from the geometry of a float ``h_s``: ``Conv2d``/``ConvTranspose2d`` layers with ReLU
    between and a final ``Softplus``. Its buffers are empty until :meth:`update`; loading a state
    dict sizes them.
    """

    def __init__(self, h_s: nn.Sequential):
        super().__init__()
        self.layers = _conv_layers(h_s)
        for i in range(len(self.layers)):
            self.register_buffer(f"weight{i}", torch.zeros(0, dtype=torch.int64))
            self.register_buffer(f"bias{i}", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("thresholds", torch.zeros(0, dtype=torch.int64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, _ in self.named_buffers(recurse=False):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def update(self, h_s: nn.Sequential, scale_table: torch.Tensor, scale_bound: float) -> None:
        """Fix the integer weights from the trained ``h_s`` and the bin edges from ``scale_table``."""
        if _conv_layers(h_s) != self.layers:
            raise ValueError("h_s does not have the layers this integer network was built for")
        input_bits, input_max = 0, Z_MAX
        for i, layer in enumerate(list(h_s)[0::2]):
            w = layer.weight.detach().double().cpu()
            weight = torch.round(w * 2**WEIGHT_BITS).long()
            bias = torch.round(layer.bias.detach().double().cpu() * 2 ** (WEIGHT_BITS + input_bits)).long()
            fan = weight.double().abs().sum(dim=(1, 2, 3) if not isinstance(layer, nn.ConvTranspose2d) else (0, 2, 3))
            if float(fan.max()) * input_max + float(bias.abs().max()) >= SUM_LIMIT:
                raise LdcodecError(f"h_s layer {i} has weights too large for the integer network "
                                   f"(max |w| = {float(w.abs().max()):.3g}); the baseline diverged in training")
            setattr(self, f"weight{i}", weight)
            setattr(self, f"bias{i}", bias)
            input_bits, input_max = ACTIVATION_BITS, A_MAX
        out_bits = WEIGHT_BITS + ACTIVATION_BITS if len(self.layers) > 1 else WEIGHT_BITS
        self.thresholds = torch.from_numpy(_integer_edges(scale_table.double().cpu().numpy(), scale_bound, out_bits))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.thresholds.numel() == 0:
            raise LdcodecError("the hyperprior has no integer scale network: call update_tables() after training")
        a = z.detach().cpu().round().clamp(-Z_MAX, Z_MAX).long()
        for i, (transposed, stride, padding, output_padding) in enumerate(self.layers):
            w, b = getattr(self, f"weight{i}"), getattr(self, f"bias{i}")
            if transposed:
                u = F.conv_transpose2d(a, w, stride=stride, padding=padding, output_padding=output_padding)
            else:
                u = F.conv2d(a, w, stride=stride, padding=padding)
            u = u + b.reshape(1, -1, 1, 1)
            if i < len(self.layers) - 1:
                shift = WEIGHT_BITS + (ACTIVATION_BITS if i else 0) - ACTIVATION_BITS
                a = requantize(u, shift)
        index = torch.searchsorted(self.thresholds, u.reshape(-1).contiguous())
        return index.clamp_max(len(self.thresholds) - 1).reshape(u.shape)


def requantize(u: torch.Tensor, shift: int) -> torch.Tensor:
    """ReLU, then round ``u / 2**shift`` half up and clamp to ``A_MAX`` (int64 in and out)."""
    u = u.clamp_min(0)
    if shift > 0:
        u = torch.div(u + (1 << (shift - 1)), 1 << shift, rounding_mode="floor")
    return u.clamp_max(A_MAX)


def _integer_edges(scale_table: np.ndarray, scale_bound: float, bits: int) -> np.ndarray:
    """``t_k = floor(softplus^-1(s_k) * 2**bits)`` (int64); edges below ``scale_bound`` always count."""
    edges = np.empty(len(scale_table), dtype=np.int64)
    for k, s in enumerate(scale_table):
        if s < scale_bound:  # the clamped scale is above it whatever u is
            edges[k] = -SUM_LIMIT
        else:
            edges[k] = math.floor((s + math.log(-math.expm1(-s))) * 2**bits)  # softplus^-1(s) = log(e^s - 1)
    return edges


def _conv_layers(h_s: nn.Sequential) -> list[tuple[bool, int, int, int]]:
    """``(transposed, stride, padding, output_padding)`` of each conv of ``h_s``, checking its form."""
    modules = list(h_s)
    convs = modules[0::2]
    ok = (len(modules) % 2 == 0 and isinstance(modules[-1], nn.Softplus)
          and all(isinstance(m, nn.ReLU) for m in modules[1:-1:2])
          and all(isinstance(c, (nn.Conv2d, nn.ConvTranspose2d)) and c.bias is not None for c in convs))
    if not ok or any(c.groups != 1 or c.dilation != (1, 1) or c.stride[0] != c.stride[1] for c in convs):
        raise ValueError("IntegerScaleNet needs h_s = [conv, ReLU, conv, ..., conv, Softplus]")
    return [(isinstance(c, nn.ConvTranspose2d), c.stride[0], c.padding[0],
             c.output_padding[0] if isinstance(c, nn.ConvTranspose2d) else 0) for c in convs]
