"""Fidelity against a reference sequence, and sharpness.

* PSNR: ``10 log10(1 / MSE)`` for 0..1 images, capped at ``PSNR_CAP`` dB (identical frames).
* SSIM (Wang et al. 2004, "Image quality assessment: from error visibility to structural similarity", Eq. 13):
  Gaussian window sigma 1.5 (11 x 11), K1 = 0.01, K2 = 0.03, L = 1, per channel, averaged over the image.
* Sharpness: mean gradient magnitude (central differences of luma) and variance of the Laplacian of luma
  (Pech-Pacheco et al. 2000), and gradient energy (mean squared gradient magnitude of luma); the ratio to the reference's value shows blur (< 1) or over-sharpening (> 1).
"""

from __future__ import annotations

import cv2
import numpy as np

from neurender.errors import InputError

PSNR_CAP = 100.0
_LUMA = np.array([0.2126, 0.7152, 0.0722])


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"frame of shape {a.shape} cannot be compared with a reference of shape {b.shape}")
    return a, b


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    a, b = _pair(image, reference)
    mse = float(np.mean(np.square(a - b)))
    if mse <= 10 ** (-PSNR_CAP / 10):
        return PSNR_CAP
    return float(10 * np.log10(1.0 / mse))


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    a, b = _pair(image, reference)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = 0.01**2, 0.03**2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    values = []
    for ch in range(a.shape[-1]):
        x, y = np.ascontiguousarray(a[..., ch]), np.ascontiguousarray(b[..., ch])
        mx, my = blur(x), blur(y)
        vx = blur(x * x) - mx * mx
        vy = blur(y * y) - my * my
        cxy = blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        values.append(float(s.mean()))
    return float(np.mean(values))


def _luma(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image, dtype=np.float64)
    return a[..., :3] @ _LUMA if a.ndim == 3 and a.shape[-1] >= 3 else (a[..., 0] if a.ndim == 3 else a)


def gradient_sharpness(image: np.ndarray) -> float:
    """Mean gradient magnitude of luma (per pixel, 0..1 units)."""
    gy, gx = np.gradient(_luma(image))
    return float(np.mean(np.hypot(gx, gy)))


def gradient_energy(image: np.ndarray) -> float:
    """Mean squared gradient magnitude of luma (central differences, 0..1 units)."""
    gy, gx = np.gradient(_luma(image))
    return float(np.mean(gx * gx + gy * gy))


def laplacian_variance(image: np.ndarray) -> float:
    return float(cv2.Laplacian(np.ascontiguousarray(_luma(image)), cv2.CV_64F, ksize=1).var())
