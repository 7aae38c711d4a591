"""FastBlend-style video deflicker by patch-based blending (DiffSynth-Studio's FastBlend, after Jamriska et al. 2019
"Stylizing video by example"): every frame becomes the average of its neighbours' stylised frames remapped onto it
by PatchMatch (``neurender.deflicker.patchmatch``).

Remapping is patch voting: the output pixel is the mean of the remapped style over all patches covering it,
``out(p) = mean_{d in patch} style_j(p + flow(p - d))``, weighted by each patch's validity.

Modes (FastBlend's names):

* ``balanced`` -- sliding window: frame i averages itself and ``remap(style_j -> i)`` for ``|j - i| <= window``
  (2 * window remaps per frame; each PatchMatch call yields both directions, so ``window`` calls per frame).
* ``fast`` -- tree of partial sums: dyadic blocks of frames are accumulated once (a left tree stored at each block's
  last frame, a right tree at its first), and a frame's window is the sum of O(log window) blocks remapped onto it:
  about ``2 log2(window)`` matches per frame. Partial sums are remapped more than once, so it is a little blurrier.
* ``accurate`` -- ``balanced`` first, then every frame is matched again with the patch cost against the mean
  remapped style (``style_i`` = that mean), and averaged again.
* ``interpolate`` -- only keyframes are stylised: every frame is the distance-weighted blend of the nearest keyframe
  on each side remapped onto it (weights ``(k1 - i) / (k1 - k0)`` and ``(i - k0) / (k1 - k0)``).

Known faults of the original code avoided here: offset fields keep one integer dtype at every level (patchmatch's
``FIELD_DTYPE``); sizes are checked against the frames' own height and width (never the batch size); all offset
loops run over (dy, dx) of the patch explicitly, rows and columns never swapped.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from neurender.deflicker.patchmatch import Correspondence, estimate_correspondence_pair
from neurender.errors import InputError

log = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]
MODES = ("fast", "balanced", "accurate", "interpolate")
_FLOOR = 1e-3
"""Weight of a patch whose correspondence failed the consistency check: tiny, so a pixel is never left empty."""

Prior = Callable[[int, int], Optional[ArrayLike]]
"""``prior(i, j)`` -> an (H, W, 2) motion prior i->j (e.g. exact motion) or None."""


# --------------------------------------------------------------------------------------------------------------
# Remapping by patch voting
# --------------------------------------------------------------------------------------------------------------


def remap(image: torch.Tensor, corr: Correspondence, patch: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Remap (C, H, W) ``image`` of frame j onto frame i by patch voting along ``corr`` (i->j).

    Returns ``(image_on_i, weight)``: the vote-weighted mean (C, H, W) and the mean vote weight (H, W) in 0..1
    (the covering patches' validity, with a small floor).
    """
    c, h, w = image.shape
    if corr.flow.shape[:2] != (h, w):
        raise InputError(f"correspondence is {tuple(corr.flow.shape[:2])} but the image is {(h, w)}")
    r = patch // 2
    flow = corr.flow.to(image.device, torch.float32)  # (H, W, 2)
    valid = corr.valid.to(image.device, torch.float32).clamp(0, 1) * (1 - _FLOOR) + _FLOOR
    pad_flow = F.pad(flow.permute(2, 0, 1)[None], (r, r, r, r), mode="replicate")[0]  # (2, H+2r, W+2r)
    pad_valid = F.pad(valid[None, None], (r, r, r, r), mode="replicate")[0, 0]
    ys = torch.arange(h, device=image.device, dtype=torch.float32).view(h, 1) + 0.5
    xs = torch.arange(w, device=image.device, dtype=torch.float32).view(1, w) + 0.5
    grids, weights = [], []
    for dy in range(-r, r + 1):  # patch centred at q = p - d votes with its own offset flow(q)
        for dx in range(-r, r + 1):
            fq = pad_flow[:, r - dy: r - dy + h, r - dx: r - dx + w]
            gx = (xs + fq[0]) * (2.0 / w) - 1.0
            gy = (ys + fq[1]) * (2.0 / h) - 1.0
            grids.append(torch.stack([gx, gy], dim=-1))
            weights.append(pad_valid[r - dy: r - dy + h, r - dx: r - dx + w])
    grid = torch.stack(grids)  # (P, H, W, 2)
    wts = torch.stack(weights)  # (P, H, W)
    votes = F.grid_sample(
        image[None].expand(grid.shape[0], -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False
    )  # (P, C, H, W)
    total = wts.sum(0)
    out = (votes * wts[:, None]).sum(0) / total
    return out, total / wts.shape[0]


# --------------------------------------------------------------------------------------------------------------
# Inputs and the pair cache
# --------------------------------------------------------------------------------------------------------------


def _as_frames(frames: ArrayLike, name: str) -> torch.Tensor:
    """(N, H, W) / (N, H, W, C) float 0..1 or uint8 -> (N, C, H, W) float32."""
    t = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{name} must be an array of frames, got {type(frames).__name__}")
    if t.ndim == 3:
        t = t[..., None]
    if t.ndim != 4:
        raise InputError(f"{name} must be (N, H, W) or (N, H, W, C), got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    return t.float().permute(0, 3, 1, 2).contiguous()


class _Pairs:
    """PatchMatch correspondences computed on demand, both directions per call, cached by (i, j)."""

    def __init__(self, guides: torch.Tensor, styles: torch.Tensor, match_style: bool, opts: dict,
                 prior: Optional[Prior]):
        self.guides, self.opts, self.prior = guides, opts, prior
        self.styles = styles if match_style else None
        self.all_styles = styles
        self.cache: dict[tuple[int, int], Correspondence] = {}
        self.calls = 0

    def get(self, i: int, j: int, style_i: Optional[torch.Tensor] = None) -> Correspondence:
        """i->j; with ``style_i`` (accurate mode) the cost compares against it and nothing is cached."""
        if style_i is None and (i, j) in self.cache:
            return self.cache[(i, j)]
        hwc = lambda t: None if t is None else t.permute(1, 2, 0)  # noqa: E731
        if style_i is not None:  # accurate mode: cost against the current estimate of frame i
            si, sj = hwc(style_i), hwc(self.all_styles[j])
        else:
            si = hwc(self.styles[i]) if self.styles is not None else None
            sj = hwc(self.styles[j]) if self.styles is not None else None
        init = self.prior(i, j) if self.prior is not None else None
        fwd, bwd = estimate_correspondence_pair(
            hwc(self.guides[i]), hwc(self.guides[j]), si, sj, init_flow=init, **self.opts
        )
        self.calls += 1
        if style_i is None:
            self.cache[(i, j)], self.cache[(j, i)] = fwd, bwd
        return fwd

    def forget_before(self, first: int) -> None:
        for key in [k for k in self.cache if min(k) < first]:
            del self.cache[key]


# --------------------------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------------------------


def _window_mean(styles: torch.Tensor, pairs: _Pairs, window: int, patch: int, i: int,
                 style_i: Optional[torch.Tensor] = None) -> torch.Tensor:
    n = styles.shape[0]
    acc = styles[i].clone()
    wsum = torch.ones_like(styles[i, :1])
    for j in range(max(0, i - window), min(n, i + window + 1)):
        if j == i:
            continue
        img, wt = remap(styles[j], pairs.get(i, j, style_i), patch)
        acc += img * wt
        wsum += wt
    return acc / wsum


def _balanced(styles, pairs, window, patch, progress):
    n = styles.shape[0]
    out = torch.empty_like(styles)
    for i in range(n):
        pairs.forget_before(i - window)
        out[i] = _window_mean(styles, pairs, window, patch, i)
        if progress:
            progress(i + 1, n)
    return out


def _accurate(styles, pairs, window, patch, progress):
    n = styles.shape[0]
    first = _balanced(styles, pairs, window, patch, (lambda d, t: progress(d, 2 * n)) if progress else None)
    out = torch.empty_like(styles)
    for i in range(n):
        out[i] = _window_mean(styles, pairs, window, patch, i, style_i=first[i])
        if progress:
            progress(n + i + 1, 2 * n)
    return out


def _fast(styles, pairs, window, patch, progress):
    """Tree of partial sums; accumulators carry (style * weight, weight) so remapped sums stay normalisable."""
    n = styles.shape[0]
    ones = torch.ones_like(styles[:, :1])
    base = torch.cat([styles, ones], dim=1)  # (N, C+1, H, W)
    left: dict[tuple[int, int], torch.Tensor] = {}  # block [a 2^k, (a+1) 2^k - 1] summed on its LAST frame
    right: dict[tuple[int, int], torch.Tensor] = {}  # ... summed on its FIRST frame

    def moved(acc: torch.Tensor, src: int, dst: int) -> torch.Tensor:
        img, wt = remap(acc, pairs.get(dst, src), patch)
        return img * wt

    def left_node(k: int, a: int) -> torch.Tensor:
        if k == 0:
            return base[a]
        if (k, a) not in left:
            mid_end = (2 * a + 1) * 2 ** (k - 1) - 1
            end = (a + 1) * 2**k - 1
            left[(k, a)] = moved(left_node(k - 1, 2 * a), mid_end, end) + left_node(k - 1, 2 * a + 1)
        return left[(k, a)]

    def right_node(k: int, a: int) -> torch.Tensor:
        if k == 0:
            return base[a]
        if (k, a) not in right:
            start, mid_start = a * 2**k, (2 * a + 1) * 2 ** (k - 1)
            right[(k, a)] = right_node(k - 1, 2 * a) + moved(right_node(k - 1, 2 * a + 1), mid_start, start)
        return right[(k, a)]

    def blocks(lo: int, hi: int) -> list[tuple[int, int]]:
        """[lo, hi] as maximal aligned dyadic blocks (k, a)."""
        out, x = [], lo
        while x <= hi:
            k = 0
            while x % 2 ** (k + 1) == 0 and x + 2 ** (k + 1) - 1 <= hi:
                k += 1
            out.append((k, x >> k))
            x += 2**k
        return out

    result = torch.empty_like(styles)
    for i in range(n):
        acc = base[i].clone()
        for k, a in blocks(max(0, i - window), i - 1):
            acc += moved(left_node(k, a), (a + 1) * 2**k - 1, i)
        for k, a in blocks(i + 1, min(n - 1, i + window)):
            acc += moved(right_node(k, a), a * 2**k, i)
        result[i] = acc[:-1] / acc[-1:].clamp_min(1e-6)
        if progress:
            progress(i + 1, n)
    return result


def _interpolate(styles, keyframes, pairs, patch, progress):
    n = styles.shape[0]
    keys = sorted(keyframes)
    out = torch.empty_like(styles)
    for i in range(n):
        if i in keyframes:
            out[i] = styles[i]
        else:
            before = [k for k in keys if k < i]
            after = [k for k in keys if k > i]
            sides = []
            if before and after:
                k0, k1 = before[-1], after[0]
                sides = [(k0, (k1 - i) / (k1 - k0)), (k1, (i - k0) / (k1 - k0))]
            else:
                sides = [((before or after)[-1 if before else 0], 1.0)]
            acc = torch.zeros_like(styles[i])
            wsum = torch.zeros_like(styles[i, :1])
            for k, weight in sides:
                img, wt = remap(styles[k], pairs.get(i, k), patch)
                acc += img * wt * weight
                wsum += wt * weight
            out[i] = acc / wsum
        if progress:
            progress(i + 1, n)
    return out


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def fastblend(
    styles: ArrayLike,
    guides: ArrayLike,
    mode: str = "balanced",
    window: int = 3,
    *,
    keyframes: Optional[Sequence[int]] = None,
    patch: int = 5,
    iterations: int = 5,
    guide_weight: float = 10.0,
    match_style: bool = False,
    prior: Optional[Prior] = None,
    radius: Optional[int] = None,
    seed: int = 0,
    progress: Optional[Callable[[int, int], None]] = None,
) -> np.ndarray:
    """Deflicker stylised ``styles`` (N, H, W, C) guided by ``guides`` (N, H, W, Cg) (renders/passes) -> (N, H, W, C).

    ``mode`` is one of ``MODES``; ``window`` frames on each side (FastBlend's default is 60 at its speed; small windows
    keep detail). ``keyframes`` (indices whose ``styles`` are trusted) is required for ``interpolate``.
    ``match_style`` adds the styles to the patch cost (FastBlend's cost, ``guide_weight * SSD(guide) + SSD(style)``).
    It is off by default: the style's own flicker then pulls matches off the true motion. Measured with
    ``scripts/bench_deflicker.py`` (6 frames, 256 px, window 2): warp error 0.0139 with the style term against
    0.0019 without (input 0.0385), PSNR 25.6 against 28.4 dB. ``prior(i, j)`` supplies a motion prior (e.g. exact
    motion) so PatchMatch only searches ``radius`` px around it. The ``accurate`` mode always compares styles: its
    second pass matches against the mean remapped style, which no longer flickers.
    """
    if mode not in MODES:
        raise InputError(f"fastblend mode {mode!r} is not one of {', '.join(MODES)}")
    s = _as_frames(styles, "styles")
    g = _as_frames(guides, "guides")
    if s.shape[0] != g.shape[0] or s.shape[2:] != g.shape[2:]:
        raise InputError(
            f"styles {s.shape[0]} frames of {s.shape[3]}x{s.shape[2]} and guides {g.shape[0]} frames of "
            f"{g.shape[3]}x{g.shape[2]} must match in count and size"
        )
    if window < 1:
        raise InputError(f"window must be at least 1 frame, got {window}")
    opts = dict(patch=patch, iterations=iterations, guide_weight=guide_weight, seed=seed, radius=radius)
    n = s.shape[0]
    if mode == "interpolate":
        if not keyframes:
            raise InputError("mode 'interpolate' needs keyframes (indices of the trusted stylised frames)")
        bad = [k for k in keyframes if not 0 <= k < n]
        if bad:
            raise InputError(f"keyframes {bad} lie outside the {n} frames")
        pairs = _Pairs(g, s, False, opts, prior)  # non-keyframes have no trusted style to match
        out = _interpolate(s, set(int(k) for k in keyframes), pairs, patch, progress)
    else:
        pairs = _Pairs(g, s, match_style, opts, prior)
        fn = {"balanced": _balanced, "accurate": _accurate, "fast": _fast}[mode]
        out = fn(s, pairs, window, patch, progress)
    log.info("fastblend %s: %d frames, %d PatchMatch calls", mode, n, pairs.calls)
    return out.permute(0, 2, 3, 1).contiguous().numpy()
