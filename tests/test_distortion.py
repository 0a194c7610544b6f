"""MSE, PSNR and SSIM: closed forms, a scipy reference for SSIM, and its defining properties."""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from ldcodec.metrics.distortion import mse, psnr, ssim


def _images(n=3, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth random images, so that SSIM has structure to compare
    x = torch.rand(n, c, h // 4, w // 4, generator=g)
    return torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def test_mse_and_psnr_closed_form():
    x = torch.zeros(2, 1, 8, 8)
    y = torch.stack([torch.full((1, 8, 8), 0.1), torch.full((1, 8, 8), 0.5)])
    assert torch.allclose(mse(x, y), torch.tensor([0.01, 0.25]))
    assert torch.allclose(psnr(x, y), torch.tensor([20.0, 10 * math.log10(4.0)]))


def test_psnr_is_per_image_then_averaged():
    x = torch.zeros(2, 1, 4, 4)
    y = torch.stack([torch.full((1, 4, 4), 0.01), torch.full((1, 4, 4), 0.1)])
    per_image = psnr(x, y)
    assert per_image.shape == (2,)
    assert per_image.mean().item() == pytest.approx(30.0, abs=1e-4)  # (40 + 20) / 2, not PSNR of the pooled MSE
    assert torch.isfinite(psnr(x, x)).all()


def _scipy_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Independent reference (skimage's recipe): full-image Gaussian filtering, borders of 5 cropped."""
    f = lambda a: gaussian_filter(a, sigma=1.5, truncate=3.5, mode="reflect")[5:-5, 5:-5]  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def test_ssim_matches_scipy_reference():
    x = _images(2, 1, 28, 28, seed=1)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    ours = ssim(x, y)
    for i in range(2):
        ref = _scipy_ssim(x[i, 0].double().numpy(), y[i, 0].double().numpy())
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)


def test_ssim_constant_images_closed_form():
    # constant images: zero variances, so SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.2, 0.6, 0.01**2
    x, y = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    assert ssim(x, y).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)


def test_ssim_identity_symmetry_and_monotone_in_noise():
    x = _images(4, 3, 32, 32)
    assert torch.allclose(ssim(x, x), torch.ones(4), atol=1e-6)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g)
    scores = []
    for level in (0.02, 0.05, 0.1, 0.2):
        y = (x + level * noise).clamp(0, 1)
        s = ssim(x, y)
        assert torch.allclose(s, ssim(y, x), atol=1e-6)
        assert (s < 1).all()
        scores.append(s)
    for lower_noise, higher_noise in zip(scores, scores[1:]):
        assert (higher_noise < lower_noise).all()


def test_shape_errors():
    with pytest.raises(ValueError):
        mse(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
