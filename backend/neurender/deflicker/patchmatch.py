"""Dense correspondences by PatchMatch (Barnes et al. 2009, "PatchMatch: a randomized correspondence algorithm for
structural image editing"), in the guided form FastBlend uses (DiffSynth-Studio's FastBlend; cost after Jamriska et
al. 2019 "Stylizing video by example": ``guide_weight * SSD(guide patches) + SSD(style patches)``).

Vectorised for PyTorch (one code path for CPU and CUDA): every pixel evaluates its candidates at once.

* Coarse-to-fine pyramid with ``int(log2(min(H, W) / max_patch))`` levels; per level ``iterations`` rounds with the
  patch size shrinking from ``max_patch`` (13) to ``patch`` (5).
* Propagation: the four neighbours' offsets as candidates, evaluated as shifted copies of the whole field
  (jump-flooding style, Rong & Tan 2006: the jump shrinks 8, 4, 2, 1 over the rounds, so one round still carries good
  offsets across regions the way the sequential scan order does in the original).
* Random search: three candidates ``offset + U{-r..r}`` per pixel with r = 4, 2, 1 px.
* Patch cost: a k x k patch is summarised by a 3 x 3 grid of sub-block means (box filters by running sums, built
  once per level and patch size), so one candidate costs one gather of a 9C-vector per pixel and is exact for any
  per-pixel offset field. It is the SSD of the box-prefiltered patch on that grid rather than of every pixel: the
  price of O(1) work per candidate instead of O(k^2). (A box filter over per-pixel costs would be cheaper still, but
  is only right where the candidate field is constant over the patch; random-search candidates never are.)
* ``init_flow`` (e.g. exact motion from the vector pass): the target is pre-warped by it and only an integer residual
  within ``radius`` px is searched, so PatchMatch absorbs shading changes instead of re-discovering motion.
* Sub-pixel: a parabola through the costs at the winner and its 4 neighbours (per axis).
* Validity: forward/backward consistency (Sundaram et al. 2010): ``|f(p) + b(p + f(p))|^2 <= 0.01 (|f|^2 + |b|^2)
  + tol^2`` and the match lies inside the image.
"""

from __future__ import annotations

import logging
import math
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from neurender.deflicker.correspondence import Correspondence
from neurender.errors import InputError

log = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]

MAX_PATCH = 13
RANDOM_RADII = (4, 2, 1)


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------


def _as_chw(x: ArrayLike, name: str, device: Optional[torch.device]) -> torch.Tensor:
    """(H, W) or (H, W, C) array/tensor -> (C, H, W) float32 tensor."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if t.ndim == 2:
        t = t[..., None]
    if t.ndim != 3:
        raise InputError(f"{name} must be an (H, W) or (H, W, C) image, got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    t = t.to(device=device, dtype=torch.float32).permute(2, 0, 1).contiguous()
    if not torch.isfinite(t).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return t


def _features(
    guide: torch.Tensor, style: Optional[torch.Tensor], guide_weight: float
) -> torch.Tensor:
    """Stack so that a plain SSD over channels equals ``guide_weight * SSD(guide) + SSD(style)``."""
    parts = [guide * math.sqrt(guide_weight)]
    if style is not None:
        parts.append(style)
    return torch.cat(parts, dim=0)


# --------------------------------------------------------------------------------------------------------------
# Small tensor helpers
# --------------------------------------------------------------------------------------------------------------


def _pixel_grid(h: int, w: int, device: torch.device, dtype: torch.dtype = torch.int64) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, device=device, dtype=dtype).view(h, 1).expand(h, w)
    xs = torch.arange(w, device=device, dtype=dtype).view(1, w).expand(h, w)
    return ys, xs


def _sample(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Bilinear backward warp of (C, H, W) ``image`` at ``p + flow`` ((2, H, W) float, x then y); border repeat."""
    c, h, w = image.shape
    ys, xs = _pixel_grid(h, w, image.device, torch.float32)
    gx = (xs + 0.5 + flow[0]) * (2.0 / w) - 1.0
    gy = (ys + 0.5 + flow[1]) * (2.0 / h) - 1.0
    grid = torch.stack([gx, gy], dim=-1)[None].to(image.dtype)
    return F.grid_sample(image[None], grid, mode=mode, padding_mode="border", align_corners=False)[0]


def _inside(flow: torch.Tensor) -> torch.Tensor:
    """(H, W) float: 1 where ``p + flow`` lies within the image's outermost pixel centres."""
    _, h, w = flow.shape
    ys, xs = _pixel_grid(h, w, flow.device, torch.float32)
    x = xs + flow[0]
    y = ys + flow[1]
    return ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).float()


def _box_sum_last(x: torch.Tensor, k: int) -> torch.Tensor:
    """``out[i] = sum x[i - k//2 .. i - k//2 + k - 1]`` along the last axis (zeros outside), any k, by running sums."""
    a = k // 2
    c = F.pad(x, (a + 1, k - 1 - a)).cumsum(-1)
    return c[..., k:] - c[..., :-k]


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    """Sum over k x k windows of (..., H, W) maps (zeros outside the image), separable running sums."""
    y = _box_sum_last(x, k)
    return _box_sum_last(y.transpose(-1, -2).contiguous(), k).transpose(-1, -2)


def _shift(field: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[:, y, x] = field[:, y - dy, x - dx]`` with edge replication (the neighbour's offset as candidate)."""
    _, h, w = field.shape
    ys = (torch.arange(h, device=field.device) - dy).clamp(0, h - 1)
    xs = (torch.arange(w, device=field.device) - dx).clamp(0, w - 1)
    return field[:, ys][:, :, xs]


def _downsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x[None], size=size, mode="area")[0]


# --------------------------------------------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------------------------------------------


FIELD_DTYPE = torch.int32
"""The one integer dtype of offset fields at every level (FastBlend read an int64 identity field as int32)."""


DESCRIPTOR_DIMS = 16
"""Patch descriptors are projected onto this many principal components (of 9 C raw dimensions)."""


class _CostVolume:
    """Patch descriptors of one pyramid level and sub-block size, for exact per-pixel candidate costs.

    A k x k patch is summarised by a 3 x 3 grid of sub-block means (sub-blocks of s = round(k / 3) px, so the grid
    spans about k x k), projected onto the ``DESCRIPTOR_DIMS`` principal components of such descriptors sampled from
    both images (PCA of patches for nearest-neighbour search, as in PCA-SIFT, Ke & Sukthankar 2004, and TreeCANN,
    Olonetsky & Avidan 2012). The squared distance between two descriptors approximates the SSD of the
    box-prefiltered patches; each candidate offset then costs one gather of a short vector per pixel, exact for any
    per-pixel field -- unlike a box filter over per-pixel costs, which is right only where the candidate field is
    locally constant.
    """

    def __init__(self, src: torch.Tensor, tgt: torch.Tensor, tgt_ok: Optional[torch.Tensor], s: int,
                 generator: torch.Generator):
        c, h, w = src.shape
        self.h, self.w = h, w
        ms, mt = _block_means(src, s), _block_means(tgt, s)
        weight = _pca_taps(ms, mt, s, generator)  # (d, C, 3, 3) or None (keep the raw 9C descriptor)
        self.src = _descriptors(ms, s, weight)  # (H, W, d)
        self.tgt = _descriptors(mt, s, weight).view(h * w, -1)  # rows gathered by flat index
        self.tgt_bad = None if tgt_ok is None else (tgt_ok < 0.5).reshape(-1)
        self.ys, self.xs = _pixel_grid(h, w, src.device, FIELD_DTYPE)
        # an outside match costs more than any inside one: projections never lengthen a difference
        flat = src.reshape(c, -1)
        spread = flat.amax(dim=1) - flat.amin(dim=1)
        self.penalty = 9.0 * float(spread.square().sum()) + 1.0

    def pixel_cost(self, field: torch.Tensor) -> torch.Tensor:
        """Descriptor SSD between ``src[p]`` and ``tgt[p + field[p]]`` for one (2, H, W) integer field -> (H, W)."""
        h, w = self.h, self.w
        tx = self.xs + field[0]
        ty = self.ys + field[1]
        txc = tx.clamp(0, w - 1)
        tyc = ty.clamp(0, h - 1)
        outside = (txc != tx).logical_or_(tyc != ty)
        index = tyc.mul_(w).add_(txc).view(-1)
        gathered = self.tgt.index_select(0, index).view(h, w, -1)
        cost = gathered.sub_(self.src).square_().sum(-1)
        if self.tgt_bad is not None:
            outside.logical_or_(self.tgt_bad.index_select(0, index).view(h, w))
        return cost.masked_fill_(outside, self.penalty)


def _block_means(feat: torch.Tensor, s: int) -> torch.Tensor:
    """(C, H, W) means over s x s sub-blocks around each pixel, the image border replicated (not zero)."""
    if s <= 1:
        return feat
    c, h, w = feat.shape
    a = s // 2
    padded = F.pad(feat[None], (a, s - 1 - a, a, s - 1 - a), mode="replicate")[0]
    return _box(padded, s)[:, a: a + h, a: a + w] / float(s * s)


_TAPS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def _raw_at(means: torch.Tensor, s: int, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Raw 9C descriptors (tap-major) at the given pixels -> (n, 9C)."""
    c, h, w = means.shape
    cols = []
    for dy, dx in _TAPS:
        y = (ys + dy * s).clamp(0, h - 1)
        x = (xs + dx * s).clamp(0, w - 1)
        cols.append(means[:, y, x].T)
    return torch.cat(cols, dim=1)


def _pca_taps(ms: torch.Tensor, mt: torch.Tensor, s: int, generator: torch.Generator,
              samples: int = 4096) -> Optional[torch.Tensor]:
    """Top principal directions of raw descriptors sampled from both images, as a (d, C, 3, 3) conv weight."""
    c, h, w = ms.shape
    if 9 * c <= DESCRIPTOR_DIMS:
        return None
    n = min(samples, h * w)
    picks = []
    for m in (ms, mt):
        idx = torch.randint(0, h * w, (n,), generator=generator).to(m.device)
        picks.append(_raw_at(m, s, idx // w, idx % w))
    x = torch.cat(picks).double()
    x = x - x.mean(0)
    _, vecs = torch.linalg.eigh(x.T @ x)  # ascending eigenvalues
    basis = vecs[:, -DESCRIPTOR_DIMS:].T.float()  # (d, 9C), tap-major
    return basis.view(DESCRIPTOR_DIMS, 3, 3, c).permute(0, 3, 1, 2).contiguous()


def _descriptors(means: torch.Tensor, s: int, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """(C, H, W) sub-block means -> (H, W, d) descriptors: the 3 x 3 grid at spacing s, PCA-projected if ``weight``."""
    c, h, w = means.shape
    pad = F.pad(means[None], (s, s, s, s), mode="replicate")
    if weight is not None:  # projection of the tap grid = one dilated 3 x 3 convolution
        return F.conv2d(pad, weight, dilation=s)[0].permute(1, 2, 0).contiguous()
    p = pad[0].permute(1, 2, 0)
    taps = [p[s + dy * s: s + dy * s + h, s + dx * s: s + dx * s + w] for dy, dx in _TAPS]
    return torch.cat(taps, dim=-1)


def _patch_schedule(iterations: int, patch: int, max_patch: int) -> list[int]:
    """Odd patch sizes shrinking from ``max_patch`` to ``patch`` over ``iterations`` rounds (13, 11, 9, 7, 5)."""
    if iterations == 1:
        return [patch]
    sizes = np.linspace(max_patch, patch, iterations)
    return [int(round(s)) // 2 * 2 + 1 for s in sizes]


def _block_size(k: int) -> int:
    """Sub-block size s of the 3 x 3 descriptor grid for a k x k patch."""
    return max(1, int(round(k / 3)))


def _search_level(
    src: torch.Tensor,
    tgt: torch.Tensor,
    tgt_ok: Optional[torch.Tensor],
    field: torch.Tensor,
    *,
    sizes: list[int],
    radius: Optional[int],
    generator: torch.Generator,
) -> tuple[torch.Tensor, _CostVolume]:
    """PatchMatch rounds on one pyramid level; ``field`` is a (2, H, W) integer offset field (x, y)."""
    _, h, w = src.shape
    n = len(sizes)
    vol, block = None, 0
    for it, k in enumerate(sizes):
        if vol is None or _block_size(k) != block:  # 13 and 11 share s = 4, 7 and 5 share s = 2
            block = _block_size(k)
            vol = _CostVolume(src, tgt, tgt_ok, block, generator)
        jump = int(max(1, 2 ** (n - 2 - it))) if n > 1 else 1
        jump = min(jump, max(1, min(h, w) // 4))
        cands = [_shift(field, dy, dx) for dy, dx in ((jump, 0), (-jump, 0), (0, jump), (0, -jump))]
        best = vol.pixel_cost(field)
        for i, cand in enumerate(cands + [None] * len(RANDOM_RADII)):
            if cand is None:  # random search around the current best (updated in place as candidates win)
                r = RANDOM_RADII[i - len(cands)]
                cand = field + torch.randint(-r, r + 1, (2, h, w), generator=generator, dtype=FIELD_DTYPE).to(field.device)
            if radius is not None:
                cand = cand.clamp_(-radius, radius)
            cost = vol.pixel_cost(cand)
            better = cost < best  # ties keep the current offset
            best = torch.where(better, cost, best)
            field = torch.where(better, cand, field)
    assert vol is not None
    return field, vol


def _subpixel(vol: _CostVolume, field: torch.Tensor) -> torch.Tensor:
    """Parabola fit through the patch costs at the integer winner and its +-1 neighbours, per axis -> float field."""
    def cost_at(dx: int, dy: int) -> torch.Tensor:
        step = torch.tensor([dx, dy], dtype=FIELD_DTYPE, device=field.device).view(2, 1, 1)
        return vol.pixel_cost(field + step)

    c0 = cost_at(0, 0)
    out = field.float()
    for axis, (lo, hi) in enumerate(((cost_at(-1, 0), cost_at(1, 0)), (cost_at(0, -1), cost_at(0, 1)))):
        curv = lo - 2 * c0 + hi
        ok = (curv > 1e-9) & (lo < vol.penalty) & (hi < vol.penalty)
        delta = torch.where(ok, 0.5 * (lo - hi) / curv.clamp_min(1e-9), torch.zeros_like(curv))
        out[axis] += delta.clamp(-0.5, 0.5)
    return out


def _levels_for(h: int, w: int, max_patch: int, init_flow: bool, radius: Optional[int]) -> int:
    full = max(1, int(math.log2(max(min(h, w) / max_patch, 1.0))))
    if not init_flow:
        return full
    # with a motion prior only the residual is searched: a pyramid is needed only for a large radius
    return max(1, min(full, 1 + int(math.log2(max(radius or 4, 4) / 4))))


def _nnf(
    src: torch.Tensor,
    tgt: torch.Tensor,
    init: Optional[torch.Tensor],
    radius: Optional[int],
    *,
    patch: int,
    iterations: int,
    max_patch: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Coarse-to-fine PatchMatch from ``src`` to ``tgt`` (C, H, W) -> (2, H, W) float flow (x, y) src->tgt."""
    _, h, w = src.shape
    levels = _levels_for(h, w, max_patch, init is not None, radius)
    sizes = _patch_schedule(iterations, patch, max_patch)
    field: Optional[torch.Tensor] = None
    ph, pw = h, w
    for level in reversed(range(levels)):
        scale = 2**level
        lh, lw = max(1, round(h / scale)), max(1, round(w / scale))
        s = _downsample(src, (lh, lw)) if level else src
        t = _downsample(tgt, (lh, lw)) if level else tgt
        t_ok = None
        if init is not None:  # search a residual against the target pre-warped by the motion prior
            lin = _downsample(init, (lh, lw)) * torch.tensor([lw / w, lh / h], device=init.device).view(2, 1, 1)
            t = _sample(t, lin)
            t_ok = _inside(lin)
        if field is None:  # identity (zero residual), FIELD_DTYPE at every level
            field = torch.zeros(2, lh, lw, dtype=FIELD_DTYPE, device=src.device)
        else:
            up = F.interpolate(field[None].float(), size=(lh, lw), mode="nearest")[0]
            scale_up = torch.tensor([lw / pw, lh / ph], device=up.device).view(2, 1, 1)
            field = (up * scale_up).round().to(FIELD_DTYPE)
        ph, pw = lh, lw
        level_radius = None if radius is None else max(1, int(math.ceil(radius / scale)))
        field, vol = _search_level(s, t, t_ok, field, sizes=sizes, radius=level_radius, generator=generator)
        if level == 0:
            flow = _subpixel(vol, field)
    if init is None:
        return flow
    # residual r against tgt warped by init: the match of p is p + r + init(p + r)
    return flow + _sample(init, flow)


def _invert(flow: torch.Tensor, rounds: int = 5) -> torch.Tensor:
    """Approximate inverse of a (2, H, W) flow by fixed-point iteration ``b(q) = -f(q + b(q))``."""
    back = -flow
    for _ in range(rounds):
        back = -_sample(flow, back)
    return back


def _consistency(fwd: torch.Tensor, bwd: torch.Tensor, tol: float) -> torch.Tensor:
    """Forward/backward check (Sundaram et al. 2010) and inside-image test -> (H, W) float mask."""
    b_at = _sample(bwd, fwd)
    err = (fwd + b_at).square().sum(0)
    bound = 0.01 * (fwd.square().sum(0) + b_at.square().sum(0)) + tol * tol
    return ((err <= bound).float() * _inside(fwd))


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def estimate_correspondence_pair(
    guide_i: ArrayLike,
    guide_j: ArrayLike,
    style_i: Optional[ArrayLike] = None,
    style_j: Optional[ArrayLike] = None,
    init_flow: Optional[ArrayLike] = None,
    radius: Optional[int] = None,
    patch: int = 5,
    iterations: int = 5,
    guide_weight: float = 10.0,
    *,
    max_patch: int = MAX_PATCH,
    consistency_tol: float = 1.0,
    seed: int = 0,
    device: Optional[Union[str, torch.device]] = None,
) -> tuple[Correspondence, Correspondence]:
    """PatchMatch both ways: ``(i->j, j->i)`` correspondences, each with forward/backward-consistent validity.

    Images are (H, W) or (H, W, C) arrays/tensors (float 0..1 or uint8). ``init_flow`` (H, W, 2) is a motion prior
    i->j in pixels (x right, y down); with it only a residual within ``radius`` px (default 4) is searched.
    """
    dev = torch.device(device) if device is not None else (
        guide_i.device if isinstance(guide_i, torch.Tensor) else torch.device("cpu")
    )
    gi, gj = _as_chw(guide_i, "guide_i", dev), _as_chw(guide_j, "guide_j", dev)
    if gi.shape != gj.shape:
        raise InputError(f"guide_i {tuple(gi.shape[1:])} and guide_j {tuple(gj.shape[1:])} must have the same size")
    if (style_i is None) != (style_j is None):
        raise InputError("give both style_i and style_j, or neither")
    si = sj = None
    if style_i is not None:
        si, sj = _as_chw(style_i, "style_i", dev), _as_chw(style_j, "style_j", dev)  # type: ignore[arg-type]
        if si.shape[1:] != gi.shape[1:] or sj.shape != si.shape:
            raise InputError(f"style images must be {gi.shape[2]}x{gi.shape[1]} like the guides, with equal channels")
    if patch < 1 or patch % 2 == 0 or max_patch < patch or max_patch % 2 == 0:
        raise InputError(f"patch sizes must be odd with patch <= max_patch, got patch={patch}, max_patch={max_patch}")
    if iterations < 1:
        raise InputError(f"iterations must be at least 1, got {iterations}")
    if guide_weight < 0:
        raise InputError(f"guide_weight must be >= 0, got {guide_weight}")
    init = None
    if init_flow is not None:
        init = _as_chw(init_flow, "init_flow", dev)
        if init.shape != (2, gi.shape[1], gi.shape[2]):
            raise InputError(f"init_flow must be (H, W, 2) = ({gi.shape[1]}, {gi.shape[2]}, 2), "
                             f"got {tuple(init.permute(1, 2, 0).shape)}")
        radius = 4 if radius is None else int(radius)
        if radius < 1:
            raise InputError(f"radius must be at least 1 px, got {radius}")
    elif radius is not None:
        radius = int(radius)
        if radius < 1:
            raise InputError(f"radius must be at least 1 px, got {radius}")

    fi, fj = _features(gi, si, guide_weight), _features(gj, sj, guide_weight)
    generator = torch.Generator().manual_seed(int(seed))
    opts = dict(patch=patch, iterations=iterations, max_patch=max_patch, generator=generator)
    fwd = _nnf(fi, fj, init, radius, **opts)  # type: ignore[arg-type]
    bwd = _nnf(fj, fi, None if init is None else _invert(init), radius, **opts)  # type: ignore[arg-type]
    valid_f = _consistency(fwd, bwd, consistency_tol)
    valid_b = _consistency(bwd, fwd, consistency_tol)
    return (
        Correspondence(fwd.permute(1, 2, 0).contiguous(), valid_f),
        Correspondence(bwd.permute(1, 2, 0).contiguous(), valid_b),
    )


def estimate_correspondence(
    guide_i: ArrayLike,
    guide_j: ArrayLike,
    style_i: Optional[ArrayLike] = None,
    style_j: Optional[ArrayLike] = None,
    init_flow: Optional[ArrayLike] = None,
    radius: Optional[int] = None,
    patch: int = 5,
    iterations: int = 5,
    guide_weight: float = 10.0,
    **kwargs,
) -> Correspondence:
    """PatchMatch correspondence i->j (``flow`` (H, W, 2) px, ``valid`` (H, W)); see ``estimate_correspondence_pair``.

    The backward field j->i is computed too, for the validity test; use ``estimate_correspondence_pair`` to keep it.
    """
    fwd, _ = estimate_correspondence_pair(
        guide_i, guide_j, style_i, style_j, init_flow, radius, patch, iterations, guide_weight, **kwargs
    )
    return fwd
