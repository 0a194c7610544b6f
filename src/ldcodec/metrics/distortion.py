"""Per-image distortion: MSE, PSNR and SSIM between images in ``[0, 1]``.

Every function takes two float tensors ``x, y`` of shape ``(N, C, H, W)`` with values
in ``[0, data_range]`` and returns a ``(N,)`` tensor, one value per image, so that a
report can average them (PSNR is computed per image, then averaged: the convention of
the learned-compression literature) or attach confidence intervals.

SSIM follows Wang, Bovik, Sheikh, Simoncelli 2004, "Image quality assessment: from
error visibility to structural similarity", Eq. 13 with the 11x11 circular-symmetric
Gaussian window of standard deviation 1.5 (Sec. III-C), ``K1 = 0.01``, ``K2 = 0.03``,
local statistics over the window positions that lie entirely inside the image (the
authors' reference implementation), channels averaged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: PSNR of an exact reconstruction would be infinite and would swamp an average; the
#: per-image MSE is floored here, which caps PSNR at 100 dB for ``data_range = 1``.
MSE_FLOOR = 1e-10


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"expected two (N, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W) x 2 -> (N,)``: mean squared error of each image over its pixels and channels."""
    _check_pair(x, y)
    return (x.double() - y.double()).pow(2).flatten(1).mean(dim=1).to(x.dtype)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """``(N, C, H, W) x 2 -> (N,)``: ``10 log10(data_range^2 / MSE)`` in dB per image (MSE floored)."""
    return 10.0 * torch.log10(data_range**2 / mse(x, y).clamp_min(MSE_FLOOR))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """``(size,)`` normalised 1-D Gaussian; its outer product is the 2-D SSIM window."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(t**2) / (2 * sigma**2))
    return w / w.sum()


def _local_mean(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of each channel: ``(N, C, H, W) -> (N, C, H-k+1, W-k+1)``."""
    c, k = x.shape[1], window.numel()
    rows = window.view(1, 1, k, 1).expand(c, 1, k, 1)
    cols = window.view(1, 1, 1, k).expand(c, 1, 1, k)
    return F.conv2d(F.conv2d(x, rows, groups=c), cols, groups=c)


def ssim_map(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Local SSIM, Wang et al. 2004 Eq. 13: ``(N, C, H, W) x 2 -> (N, C, H-10, W-10)`` for the 11-tap window.

    ``SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))``
    with ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2`` and Gaussian-weighted local moments (Eqs. 14-16).
    Computed in float64: the variances are differences of nearly equal numbers.
    """
    _check_pair(x, y)
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"SSIM needs images of at least {window_size}x{window_size}, got {tuple(x.shape[-2:])}")
    x, y = x.double(), y.double()
    window = gaussian_window(window_size, sigma).to(x.device)
    mu_x, mu_y = _local_mean(x, window), _local_mean(y, window)
    var_x = _local_mean(x * x, window) - mu_x**2
    var_y = _local_mean(y * y, window) - mu_y**2
    cov_xy = _local_mean(x * y, window) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    return luminance * contrast_structure


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, **window: float) -> torch.Tensor:
    """``(N, C, H, W) x 2 -> (N,)``: mean SSIM of each image (Wang et al. 2004 Eq. 17), channels averaged.

    ``window`` passes ``window_size``, ``sigma``, ``k1``, ``k2`` on to :func:`ssim_map`.
    """
    return ssim_map(x, y, data_range, **window).flatten(1).mean(dim=1).to(x.dtype)

