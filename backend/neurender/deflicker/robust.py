"""Flicker removal along motion: undo each frame's low-frequency colour deviation, then fuse robustly.

A plain average along exact motion (``blend.py``) only dilutes flicker by the number of frames it averages, and
averages hallucinated detail and compression blocks in with everything else. Per-frame diffusion flicker is mostly
low-frequency (gain, offset, gamma, colour blotches) plus local outliers (invented texture, JPEG blocks), so the
fusion here works in two steps on the frames warped along the motion (``Correspondence`` grids, exact or estimated):

1. **Colour compensation** (local affine colour transfer towards the temporal consensus, in the spirit of
   Bonneel et al. 2015, "Blind video temporal consistency", and of He et al.'s guided filter, TPAMI 2013, Eq. 5-6
   for the local linear fit). At a low resolution (cells of ``cell`` px) every frame's reference is the robust mean
   of its neighbours within ``reach`` frames warped onto it (adjacent correspondences chained, occlusion respected;
   cheap at that size, so the reach is long). Per channel a local linear model ``ref ~ a x + b`` is fitted over
   windows of ``radius`` cells by weighted least squares (weights: neighbour coverage times agreement, so regions the
   frame invented do not pull the fit), with ``a`` regularised towards 1 (``eps``): flat regions get an offset,
   textured ones gain and offset. ``a`` and ``b`` are smoothed, upsampled and applied: ``x' = a x + b``. Gain, offset,
   gamma (locally affine) and blotches go; detail stays the frame's own.
2. **Robust fusion** (iteratively reweighted least squares, Holland & Welsch 1977; the weight function of
   Black & Anandan 1996's robust statistics): every output pixel is the weighted mean of the compensated frame and its
   neighbours within ``window`` frames warped onto it, with weights ``w_t * valid * rho(r)``: ``w_t`` triangular in
   the frame distance (the frame itself 1), ``r`` the 3x3-averaged colour distance of the candidate to the current
   estimate, ``rho(r) = 1 / (1 + (r / scale)^2)`` (Cauchy). Candidates that disagree with the majority (a patch only
   one frame invented, a JPEG block, a wrong correspondence) are voted out rather than averaged in; the frame itself
   is voted on like every other candidate.

Everything the motion decides is planned once (``plan_fusion``); ``fuse`` is what the in-iteration hook runs at every
configured step and the post pass runs once. Memory of a plan: 12 bytes x H x W per frame pair at full resolution
(2 x ``window`` pairs per frame) plus the low-resolution pairs (``reach`` is counted at 1/``cell``^2 of that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from neurender.deflicker.correspondence import Correspondence, compose
from neurender.deflicker.warp import sample_grid

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 4
DEFAULT_REACH = 8
DEFAULT_CELL = 8
DEFAULT_RADIUS = 2
DEFAULT_EPS = 5e-3
DEFAULT_SCALE = 0.08
DEFAULT_ITERATIONS = 2
DEFAULT_BAND_CELL = 2
DEFAULT_BAND_REACH = 8
FRAMES_PER_CHUNK = 1
TILE_ROWS = 32


def temporal_weight(distance: int, window: int) -> float:
    """Box weight: 1 within ``window`` frames. (A triangular window leaves more flicker: two adjacent frames then
    weigh their shared neighbours differently; measured 1.32 vs 1.20 warp L1 at equal PSNR.)"""
    return 1.0 if abs(distance) <= window else 0.0


@dataclass
class FusionOptions:
    window: int = DEFAULT_WINDOW
    """Neighbours on each side fused into every frame at full resolution."""
    reach: int = DEFAULT_REACH
    """Neighbours on each side of the low-resolution colour reference (0: no colour compensation)."""
    cell: int = DEFAULT_CELL
    """Pixels per low-resolution cell (the scale of the colour deviation that is undone)."""
    radius: int = DEFAULT_RADIUS
    """Half-size, in cells, of the windows of the local colour fit."""
    eps: float = DEFAULT_EPS
    """Regularisation of the local gain towards 1 (variance units, 0..1 images). 5e-3 measured best: 1e-3 over-sharpened
    (gradient energy 1.16x the target's at 512x512), 1e-2 over-softened at 256 (0.94x); PSNR and warp improve with it."""
    scale: float = DEFAULT_SCALE
    """Colour distance (0..1 units) at which a candidate's robust weight halves (0: plain weighted mean)."""
    iterations: int = DEFAULT_ITERATIONS
    """Reweighting rounds of the robust fusion."""
    band_cell: int = DEFAULT_BAND_CELL
    """Pixels per cell of the coarse band that is fused again over ``band_reach`` (0: no coarse band)."""
    band_reach: int = DEFAULT_BAND_REACH
    compensate: bool = True
    robust: bool = True


@dataclass
class PairGroup:
    """Pairs (i, i + offset) for i = start .. start + len - 1: sampling grids (P, h, w, 2) and weights (P, 1, h, w)
    = temporal weight x validity (not normalised)."""

    offset: int
    start: int
    grids: torch.Tensor
    weights: torch.Tensor

    def __len__(self) -> int:
        return int(self.grids.shape[0])

    def to(self, device, dtype) -> "PairGroup":
        return PairGroup(self.offset, self.start, self.grids.to(device, dtype), self.weights.to(device, dtype))


@dataclass
class FusionPlan:
    count: int
    height: int
    width: int
    groups: list[PairGroup]
    low_groups: list[PairGroup]
    low_size: tuple[int, int]
    band_groups: list[PairGroup]
    band_size: tuple[int, int]
    options: FusionOptions
    interpolation: str = "bilinear"
    _moved: dict = field(default_factory=dict, repr=False)

    @property
    def pairs(self) -> int:
        return sum(len(g) for g in self.groups + self.low_groups + self.band_groups)

    def on(self, device, dtype) -> "FusionPlan":
        """This plan with its tensors on ``device``/``dtype`` (cached: the hook calls it at every step)."""
        key = (str(device), dtype)
        if key not in self._moved:
            self._moved[key] = FusionPlan(self.count, self.height, self.width,
                                          [g.to(device, dtype) for g in self.groups],
                                          [g.to(device, dtype) for g in self.low_groups], self.low_size,
                                          [g.to(device, dtype) for g in self.band_groups], self.band_size,
                                          self.options, self.interpolation)
        return self._moved[key]


def _group(offset: int, start: int, corrs: list[Correspondence], window: int, strict: bool = False,
           sharp: bool = True) -> PairGroup:
    """``strict`` (low resolution): a cell counts only if all its pixels are visible and, with object indices, the
    footprint around its match stays on the same object (``sharp``), so coarse taps do not reach across an edge."""
    tw = temporal_weight(offset, window)
    grids = sample_grid(torch.stack([c.flow for c in corrs]))
    weights = []
    for c in corrs:
        v = (c.valid > 0.999).float() if strict else c.valid
        v = v if c.sharp is None or not sharp else v * c.sharp
        weights.append((v * tw)[None])
    return PairGroup(offset, start, grids, torch.stack(weights))


def plan_fusion(source, options: Optional[FusionOptions] = None, method: str = "auto") -> FusionPlan:
    """Correspondences of every frame to its neighbours: within ``window`` at full size, within ``reach`` at the
    low size (adjacent pairs resized, then chained there)."""
    opt = options or FusionOptions()
    if opt.window < 0 or opt.reach < 0:
        raise ValueError("window and reach must be >= 0")
    n, h, w = source.count, source.height, source.width
    groups = []
    for offset in [d for k in range(1, opt.window + 1) for d in (-k, k)]:
        lo, hi = max(0, -offset), min(n, n - offset)
        if hi > lo:
            groups.append(_group(offset, lo, [source.correspondence(i, i + offset, method) for i in range(lo, hi)],
                                 opt.window, sharp=getattr(source, "interpolation", "bilinear") == "bicubic"))
    adjacent: dict[tuple[int, int], Correspondence] = {}

    def chained(cell: int, reach: int) -> tuple[list[PairGroup], tuple[int, int]]:
        size = (max(1, h // max(cell, 1)), max(1, w // max(cell, 1)))
        if reach <= 0 or n < 2:
            return [], size
        for i in range(n):
            for s in (-1, 1):
                if 0 <= i + s < n and (i, i + s) not in adjacent:
                    adjacent[(i, i + s)] = source.correspondence(i, i + s, method)
        links = {k: c.resized(*size) for k, c in adjacent.items()}
        chains: dict[tuple[int, int], Correspondence] = dict(links)
        for k in range(2, reach + 1):
            for i in range(n):
                for s in (-1, 1):
                    j = i + s * k
                    if 0 <= j < n:
                        chains[(i, j)] = compose(chains[(i, j - s)], links[(j - s, j)])
        out = []
        for offset in [d for k in range(1, reach + 1) for d in (-k, k)]:
            lo, hi = max(0, -offset), min(n, n - offset)
            if hi > lo:
                out.append(_group(offset, lo, [chains[(i, i + offset)] for i in range(lo, hi)], reach, strict=True))
        return out, size

    low_groups, low_size = chained(opt.cell, opt.reach if opt.compensate else 0)
    band_groups, band_size = chained(opt.band_cell, opt.band_reach if opt.band_cell > 0 else 0)
    return FusionPlan(n, h, w, groups, low_groups, low_size, band_groups, band_size, opt,
                      getattr(source, "interpolation", "bilinear"))

# ------------------------------------------------------------------------------------------------------------------


def _candidates(images: torch.Tensor, own: torch.Tensor, groups: list[PairGroup], mode: str, a: int, b: int,
                y0: int = 0, y1: Optional[int] = None):
    """For target frames a..b-1, rows y0..y1-1: candidates (K, b - a, C, rows, w) and weights (K, b - a, 1, rows, w);
    slot 0 is the frame itself (``own``, weight 1), slot k the k-th group's neighbour warped onto it (weight 0 where
    none)."""
    _, c, h, w = images.shape
    y1 = h if y1 is None else y1
    k = 1 + len(groups)
    values = images.new_zeros(k, b - a, c, y1 - y0, w)
    weights = images.new_zeros(k, b - a, 1, y1 - y0, w)
    values[0] = own[a:b, :, y0:y1]
    weights[0] = 1.0
    for slot, g in enumerate(groups, start=1):
        lo, hi = max(a, g.start), min(b, g.start + len(g))
        if hi <= lo:
            continue
        src = images[lo + g.offset: hi + g.offset]
        values[slot, lo - a: hi - a] = F.grid_sample(src, g.grids[lo - g.start: hi - g.start, y0:y1], mode=mode,
                                                     padding_mode="border", align_corners=False)
        weights[slot, lo - a: hi - a] = g.weights[lo - g.start: hi - g.start, :, y0:y1]
    return values, weights


def _fused(images: torch.Tensor, groups: list[PairGroup], mode: str, scale: float, iterations: int,
           chunk: int) -> torch.Tensor:
    """Robust mean of every frame's candidates, ``chunk`` target frames and ``TILE_ROWS`` rows at a time (bounded
    memory, and a working set that stays in cache: 2.8x faster at 512x512 than 4 whole frames at a time). A tile is computed
    with ``iterations`` extra rows on each side, because every reweighting round's 3x3 residual reaches one row
    further; the rows kept are exactly what the whole frame gives."""
    n, _, h, _ = images.shape
    halo = iterations if scale > 0 else 0
    out = torch.empty_like(images)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        for y0 in range(0, h, TILE_ROWS):
            y1 = min(h, y0 + TILE_ROWS)
            lo, hi = max(0, y0 - halo), min(h, y1 + halo)
            values, weights = _candidates(images, images, groups, mode, a, b, lo, hi)
            out[a:b, :, y0:y1] = robust_mean(values, weights, scale, iterations)[..., y0 - lo: y1 - lo, :]
    return out


def _box3(x: torch.Tensor) -> torch.Tensor:
    shape = x.shape
    flat = x.reshape(-1, 1, shape[-2], shape[-1])
    return F.avg_pool2d(F.pad(flat, (1, 1, 1, 1), mode="replicate"), 3, stride=1).reshape(shape)


def robust_mean(values: torch.Tensor, weights: torch.Tensor, scale: float, iterations: int) -> torch.Tensor:
    """IRLS mean over the first axis of (K, ..., C, h, w) ``values`` with base ``weights`` (K, ..., 1, h, w)."""
    total = weights.sum(0).clamp_min(1e-8)
    est = (values * weights).sum(0) / total
    if scale <= 0:
        return est
    for _ in range(iterations):
        r = _box3((values - est).abs().mean(-3, keepdim=True))
        wr = weights / (1.0 + (r / scale) ** 2)
        est = (values * wr).sum(0) / wr.sum(0).clamp_min(1e-8)
    return est


def _box(t: torch.Tensor, radius: int) -> torch.Tensor:
    return F.avg_pool2d(F.pad(t, (radius,) * 4, mode="replicate"), 2 * radius + 1, stride=1)


def compensate(images: torch.Tensor, plan: FusionPlan, unit: float = 1.0) -> torch.Tensor:
    """Step 1: every frame's low-frequency colour deviation from its temporal consensus undone (module doc).

    Per cell the first and second moments of every channel (``pool(x)``, ``pool(x^2)``: the variance inside a cell
    counts, so warping the small maps does not lose contrast) are carried along the motion; the consensus moments
    over a fit window give the local mean/std each frame should have: ``a = std_ref / std_x``, ``b = m_ref - a m_x``
    (Reinhard et al. 2001's statistics transfer, locally; ``eps`` keeps ``a`` near 1 where there is no texture).
    """
    opt = plan.options
    if not plan.low_groups:
        return images
    n, c, h, w = images.shape
    lh, lw = plan.low_size
    scale = opt.scale * unit if opt.robust else 0.0
    eps = opt.eps * unit * unit
    m1 = F.adaptive_avg_pool2d(images, (lh, lw))
    m2 = F.adaptive_avg_pool2d(images * images, (lh, lw))
    moments = torch.cat([m1, m2], 1)
    ref = _fused(moments, plan.low_groups, "bilinear", scale, opt.iterations, n)
    wt = torch.ones_like(m1[:, :1])
    if scale > 0:  # the frame's own outliers (invented regions) must not pull the fit
        wt = 1.0 / (1.0 + ((m1 - ref[:, :c]).abs().mean(1, keepdim=True) / (2 * scale)) ** 2)
    r = opt.radius
    wsum = _box(wt, r).clamp_min(1e-6)
    mx = _box(wt * m1, r) / wsum
    vx = _box(wt * m2, r) / wsum - mx * mx
    mr = _box(wt * ref[:, :c], r) / wsum
    vr = _box(wt * ref[:, c:], r) / wsum - mr * mr
    a = torch.sqrt((vr.clamp_min(0) + eps) / (vx.clamp_min(0) + eps))
    b = mr - a * mx
    a = F.interpolate(_box(a, 1), size=(h, w), mode="bilinear", align_corners=False)
    b = F.interpolate(_box(b, 1), size=(h, w), mode="bilinear", align_corners=False)
    return images * a + b


def fuse(images: torch.Tensor, plan: FusionPlan, lo: float = float("-inf"), hi: float = float("inf")) -> torch.Tensor:
    """Deflicker (n, C, H, W) ``images`` along ``plan``: colour compensation, then robust fusion (module doc).

    ``scale`` and ``eps`` are in units of 0..1 images; for another range ``lo..hi`` (the hook's -1..1) they scale
    with ``hi - lo``, for an unbounded one (latents) with 4 standard deviations of the images.
    """
    n, c, h, w = images.shape
    if (n, h, w) != (plan.count, plan.height, plan.width):
        raise ValueError(f"images {n}x{h}x{w} do not match the plan {plan.count}x{plan.height}x{plan.width}")
    plan = plan.on(images.device, images.dtype)
    opt = plan.options
    bounded = lo > float("-inf") and hi < float("inf")
    unit = float(hi - lo) if bounded else max(4.0 * float(images.std()), 1e-6)
    scale = opt.scale * unit if opt.robust else 0.0
    x = compensate(images, plan, unit) if opt.compensate else images
    if bounded:
        x = x.clamp(lo, hi)
    out = _fused(x, plan.groups, plan.interpolation, scale, opt.iterations, FRAMES_PER_CHUNK)
    if plan.band_groups:  # the coarse band of the fused frames, fused again over a longer reach
        coarse = F.adaptive_avg_pool2d(out, plan.band_size)
        better = _fused(coarse, plan.band_groups, "bilinear", scale, opt.iterations, n)
        delta = _box(better - coarse, 1)  # only what the coarse grid represents well (no aliasing at the cell size)
        out = out + F.interpolate(delta, size=(h, w), mode="bilinear", align_corners=False)
    return out
