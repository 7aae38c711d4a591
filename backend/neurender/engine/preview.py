"""Live previews: a small picture of the predicted frames at every denoising step, without running the VAE.

The SD 1.5 VAE decoder is, to a first approximation, linear per latent pixel: ``rgb ~= latent @ F`` with the 4x3
factor matrix fitted by Keturn ("Decoding latents to RGB without upscaling", discuss.huggingface.co/t/23204,
2022) and used for the latent previews of ComfyUI (``latent_formats.SD15``) and
A1111 ("Approx cheap"). Applied to the predicted clean latents x0 (DDIM's Eq. 12, ``StepContext.predicted_x0``)
it gives one RGB pixel per latent pixel (1/8 of the render size) for a few multiply-adds: cheap enough for every
step. The frames are tiled into one contact sheet, at most ``max_frames`` of them, evenly spread over the shot.

``PreviewPublisher`` is a sampler step hook (it never changes the noise estimate): it writes the sheet atomically
to ``OUT/.neurender/preview.png`` and reports the step it shows; the server serves that file.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Callable, Optional

import numpy as np

log = logging.getLogger(__name__)

PREVIEW_NAME = "preview.png"

SD15_LATENT_RGB = np.array(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ],
    dtype=np.float32,
)
"""Rows: the 4 SD 1.5 latent channels (already multiplied by the VAE scaling factor 0.18215); columns: R, G, B in
-1..1."""


def latents_to_rgb(latents) -> np.ndarray:
    """(n, C, h, w) latents (torch tensor or array) -> (n, h, w, 3) uint8 by the linear approximation.

    Models with other than 4 latent channels (tiny test models) use the first ``min(C, 4)`` rows of the matrix.
    """
    x = latents.detach().float().cpu().numpy() if hasattr(latents, "detach") else np.asarray(latents, np.float32)
    c = min(x.shape[1], SD15_LATENT_RGB.shape[0])
    rgb = np.einsum("nchw,ck->nhwk", x[:, :c], SD15_LATENT_RGB[:c])
    return (np.clip((rgb + 1.0) / 2.0, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def contact_sheet(frames: np.ndarray, max_frames: int = 16, columns: int = 4, gap: int = 1) -> np.ndarray:
    """(n, h, w, 3) uint8 -> one (H, W, 3) image of up to ``max_frames`` frames (evenly spread) in a grid."""
    n = frames.shape[0]
    if n > max_frames:
        frames = frames[np.linspace(0, n - 1, max_frames).round().astype(int)]
        n = max_frames
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    h, w = frames.shape[1:3]
    sheet = np.zeros((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), np.uint8)
    for i, image in enumerate(frames):
        r, c = divmod(i, cols)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = image
    return sheet


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement (a latent pixel becomes a ``factor`` x ``factor`` block)."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


class PreviewPublisher:
    """Step hook: after each denoising step, the predicted frames as ``folder/preview.png``; ``on_preview(step)``.

    ``step`` is 1-based (the step just computed), the same count as the progress's ``step``. Failures to write
    are logged once and never stop the render.
    """

    def __init__(self, folder: Path, on_preview: Optional[Callable[[int], None]] = None, max_frames: int = 16,
                 scale: int = 2) -> None:
        self.folder = Path(folder)
        self.on_preview = on_preview
        self.max_frames = max_frames
        self.scale = scale
        self._failed = False

    @property
    def path(self) -> Path:
        return self.folder / PREVIEW_NAME

    def __call__(self, ctx) -> None:
        try:
            self.publish(ctx.predicted_x0(), ctx.step + 1)
        except Exception:  # a preview must never fail the render
            if not self._failed:
                log.exception("live preview failed; the render goes on without previews")
            self._failed = True
        return None

    def publish(self, x0, step: int) -> None:
        from PIL import Image

        from neurender.frames import write_bytes_atomic

        sheet = upscale(contact_sheet(latents_to_rgb(x0), self.max_frames), self.scale)
        buf = io.BytesIO()
        Image.fromarray(sheet).save(buf, format="PNG", compress_level=1)
        write_bytes_atomic(self.path, buf.getvalue())
        if self.on_preview is not None:
            self.on_preview(step)
