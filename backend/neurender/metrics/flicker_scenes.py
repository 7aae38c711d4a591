"""Flickering test sequences with exact motion: photographs moved on layered-parallax paths, degraded per frame.

What a per-frame diffusion render of a moving shot looks like, with the ground truth known:

* **Motion** -- a background photograph and one or two foreground cut-outs (other photographs inside wobbly elliptic
  masks) each follow their own affine path (translation + rotation + zoom per frame; foreground layers move faster:
  parallax). Every pixel's motion to any other frame is the path of the topmost layer there, so the flow between any
  two frames and its occlusion mask (the same layer is on top at the target point, inside the image) are exact.
* **Flicker** -- every frame of the clean target is degraded independently: per-channel gamma, gain and offset,
  low-frequency colour blotches (a few large Gaussian blobs), local hallucinated texture patches (another photograph's
  texture blended into a small disc), then JPEG at a random quality.

``FlickerScene`` exposes the clean target, the degraded frames, exact flows/visibility between any two frames, the
Vector/depth/object-index passes that encode them (``FramePasses``, as Blender would write them) and the consecutive
``PairMotion`` the temporal metrics need. Photographs come from scikit-image's bundled data (public domain / CC0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np

from neurender.metrics.motion import PairMotion

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "cat")
TEXTURES = ("grass", "gravel", "brick", "camera", "moon")


def _skimage(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return img[..., :3].astype(np.float32) / 255.0


def _square(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    crop = img[y0: y0 + s, x0: x0 + s]
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA if side < s else cv2.INTER_CUBIC)


@dataclass
class Layer:
    image: np.ndarray
    """(h, w, 3) float32 source."""
    mask: Optional[np.ndarray]
    """(h, w) float32 0/1 or None (the background covers everything)."""
    start: np.ndarray
    """(2,) frame-0 position of the source centre in frame coordinates."""
    velocity: np.ndarray
    """(2,) px per frame."""
    spin: float
    """degrees per frame."""
    zoom: float
    """relative scale change per frame."""
    depth: float

    def matrix(self, t: float) -> np.ndarray:
        """3x3 map source coordinates -> frame-t coordinates (cv2: pixel centres at integers)."""
        h, w = self.image.shape[:2]
        c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        a = math.radians(self.spin * t)
        s = 1.0 + self.zoom * t
        m = np.eye(3)
        m[:2, :2] = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        m[:2, 2] = self.start + self.velocity * t - m[:2, :2] @ c
        return m


def _blob_mask(rng: np.random.Generator, side: int) -> np.ndarray:
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    c = (side - 1) / 2.0
    ang = np.arctan2(ys - c, xs - c)
    rad = np.hypot(ys - c, xs - c) / (side / 2.0)
    edge = 0.85 + sum(0.06 * rng.standard_normal() * np.cos(k * ang + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    return (rad <= edge).astype(np.float32)


@dataclass
class FlickerScene:
    """One layered-parallax shot: ``clean`` (n, S, S, 3) target, ``frames`` the degraded input (both float32 0..1)."""

    size: int
    count: int
    layers: list[Layer]
    clean: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    frames: np.ndarray = field(repr=False)

    # ------------------------------------------------------------------------------------------------------------
    def flow(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact flow a -> b (S, S, 2) float32 and visibility (S, S) bool (same layer on top there, inside)."""
        s = self.size
        xs, ys = np.meshgrid(np.arange(s, dtype=np.float64), np.arange(s, dtype=np.float64))
        flow = np.zeros((s, s, 2), np.float64)
        lab = self.labels[a]
        for k, layer in enumerate(self.layers):
            rel = layer.matrix(b) @ np.linalg.inv(layer.matrix(a))
            sel = lab == k
            x2 = rel[0, 0] * xs + rel[0, 1] * ys + rel[0, 2]
            y2 = rel[1, 0] * xs + rel[1, 1] * ys + rel[1, 2]
            flow[..., 0] = np.where(sel, x2 - xs, flow[..., 0])
            flow[..., 1] = np.where(sel, y2 - ys, flow[..., 1])
        tx, ty = xs + flow[..., 0], ys + flow[..., 1]
        inside = (tx >= 0) & (tx <= s - 1) & (ty >= 0) & (ty <= s - 1)
        # every bilinear tap at the target must show the same layer (no bleeding across a parallax edge)
        same = inside.copy()
        x0 = np.clip(np.floor(tx), 0, s - 1).astype(int)
        y0 = np.clip(np.floor(ty), 0, s - 1).astype(int)
        for dy in (0, 1):
            for dx in (0, 1):
                same &= self.labels[b][np.clip(y0 + dy, 0, s - 1), np.clip(x0 + dx, 0, s - 1)] == lab
        return flow.astype(np.float32), same

    def motion(self) -> list[PairMotion]:
        """Consecutive exact motion t -> t+1 with its visibility, for the temporal metrics."""
        return [PairMotion(*self.flow(t, t + 1)) for t in range(self.count - 1)]

    def passes(self) -> list:
        """``FramePasses`` per frame (numbers 1..n): a Vector pass encoding the exact adjacent flows (Blender's
        convention: XY = to previous, ZW = minus to next, y up), per-layer depth and object index."""
        from neurender.passes.folder import FramePasses

        out = []
        s = self.size
        for t in range(self.count):
            v = np.zeros((s, s, 4), np.float32)
            if t > 0:
                fp, _ = self.flow(t, t - 1)
                v[..., 0], v[..., 1] = fp[..., 0], -fp[..., 1]
            if t + 1 < self.count:
                fn, _ = self.flow(t, t + 1)
                v[..., 2], v[..., 3] = -fn[..., 0], fn[..., 1]
            depth = np.choose(self.labels[t], [layer.depth for layer in self.layers]).astype(np.float32)
            out.append(FramePasses(frame=t + 1, depth=depth, vector=v,
                                   object_index=(self.labels[t] + 1).astype(np.float32)))
        return out


def _render(layers: Sequence[Layer], t: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((size, size, 3), np.float32)
    labels = np.zeros((size, size), np.int64)
    for k, layer in enumerate(layers):
        m = layer.matrix(t)[:2]
        col = cv2.warpAffine(layer.image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if layer.mask is None:
            out[:] = col
            continue
        sel = cv2.warpAffine(layer.mask, m, (size, size), flags=cv2.INTER_NEAREST, borderValue=0) > 0.5
        out[sel] = col[sel]
        labels[sel] = k
    return out, labels


def degrade(clean: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
            textures: Optional[Sequence[np.ndarray]] = None, jpeg: tuple[int, int] = (30, 90)) -> np.ndarray:
    """One frame's flicker: per-channel gamma/gain/offset, colour blotches, hallucinated patches, JPEG."""
    h, w, _ = clean.shape
    x = np.clip(clean, 0, 1) ** np.exp(strength * 0.12 * rng.standard_normal(3)).astype(np.float32)
    x = x * (1 + strength * 0.07 * rng.standard_normal(3)) + strength * 0.03 * rng.standard_normal(3)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(3, 6))):  # low-frequency colour blotches
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        sig = rng.uniform(0.1, 0.25) * w
        g = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sig * sig))
        x = x + strength * 0.07 * g[..., None] * rng.standard_normal(3)
    if textures:
        for _ in range(int(rng.integers(1, 3))):  # hallucinated texture in a small feathered disc
            tex = textures[int(rng.integers(len(textures)))]
            th, tw = tex.shape[:2]
            ty, tx = int(rng.integers(0, th - h + 1)), int(rng.integers(0, tw - w + 1))
            patch = tex[ty: ty + h, tx: tx + w] * rng.uniform(0.6, 1.2, 3)
            cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
            r = rng.uniform(0.04, 0.09) * w
            d = np.hypot(ys - cy, xs - cx)
            alpha = strength * 0.8 * np.clip((r - d) / (0.3 * r) + 0.5, 0, 1)
            local = cv2.GaussianBlur(x, (0, 0), r)  # texture around the local colour, as a model would invent it
            invented = local + (patch - patch.mean((0, 1))) * 1.2
            x = x * (1 - alpha[..., None]) + invented * alpha[..., None]
    x = np.clip(x, 0, 1)
    q = int(rng.integers(jpeg[0], jpeg[1] + 1))
    ok, buf = cv2.imencode(".jpg", (x[..., ::-1] * 255).round().astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, q])
    return (cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0) if ok else x


def make_scene(size: int = 256, count: int = 16, seed: int = 0, photos: Optional[Sequence[str]] = None,
               strength: float = 1.0, foregrounds: int = 2, speed: float = 1.0) -> FlickerScene:
    """A layered-parallax shot of ``count`` frames at ``size`` x ``size`` (all randomness from ``seed``)."""
    rng = np.random.default_rng(seed)
    names = list(photos) if photos else [PHOTOS[i] for i in rng.permutation(len(PHOTOS))[: 1 + foregrounds]]
    scale = size / 256.0
    span = count - 1
    bg_v = rng.uniform(-1, 1, 2)
    bg_v = bg_v / np.linalg.norm(bg_v) * rng.uniform(2.0, 3.5) * scale * speed
    big = int(size * 1.3 + np.abs(bg_v).max() * span * 1.2) + 8  # the path never shows the border
    layers = [Layer(_square(_skimage(names[0]), big), None, np.array([size / 2.0, size / 2.0]) - bg_v * span / 2,
                    bg_v, rng.uniform(-0.25, 0.25) * speed, rng.uniform(-0.002, 0.002) * speed, 10.0)]
    for k in range(foregrounds):
        side = int(size * rng.uniform(0.32, 0.45))
        v = rng.uniform(-1, 1, 2)
        v = v / np.linalg.norm(v) * rng.uniform(4.0, 6.5) * scale * speed
        centre = np.array([rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size]) - v * span / 2
        layers.append(Layer(_square(_skimage(names[1 + k]), side), _blob_mask(rng, side), centre, v,
                            rng.uniform(-1.0, 1.0) * speed, rng.uniform(-0.004, 0.004) * speed, 5.0 - 2.0 * k))
    rendered = [_render(layers, t, size) for t in range(count)]
    clean = np.stack([r[0] for r in rendered]).astype(np.float32)
    labels = np.stack([r[1] for r in rendered])
    textures = [_square(_skimage(n), size * 2) * np.array(c, np.float32)
                for n, c in zip(TEXTURES, ((0.6, 0.9, 0.5), (0.9, 0.8, 0.7), (1.0, 0.6, 0.5), (0.8, 0.8, 1.0),
                                           (1.0, 1.0, 0.8)))]
    frames = np.stack([degrade(c, rng, strength, textures) for c in clean]).astype(np.float32)
    return FlickerScene(size, count, layers, clean, labels, frames)


def average_along_motion(scene: FlickerScene, images: np.ndarray, reach: int) -> np.ndarray:
    """Baseline: every frame = plain mean of the frames within +-``reach`` warped onto it along the exact motion
    (bilinear), each counted where it sees the point (the frame itself always)."""
    n, s = scene.count, scene.size
    xs, ys = np.meshgrid(np.arange(s, dtype=np.float32), np.arange(s, dtype=np.float32))
    out = np.empty_like(images)
    for t in range(n):
        acc = images[t].astype(np.float64).copy()
        cnt = np.ones((s, s, 1))
        for j in range(max(0, t - reach), min(n, t + reach + 1)):
            if j == t:
                continue
            flow, vis = scene.flow(t, j)
            warped = cv2.remap(images[j], xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            acc += warped * vis[..., None]
            cnt += vis[..., None]
        out[t] = acc / cnt
    return out.astype(np.float32)
