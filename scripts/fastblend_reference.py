"""A faithful CPU port of FastBlend (Artiprocher/sd-webui-fastblend, the deflicker DiffSynth-Studio ships), for
``bench_deflicker.py`` only -- the comparison the issue asks for, not a neurender method.

What is ported, line for line in behaviour (``FastBlend/patch_match.py``, ``cupy_kernels.py``, ``runners/fast.py``,
``runners/balanced.py``, ``runners/accurate.py``):

* ``PatchMatcher``: an integer nearest-neighbour field (absolute source row/column per target pixel), ``num_iter``
  iterations per pyramid level with the patch size shrinking ``min + 2 (num_iter - 1)`` .. ``min``; each iteration
  remaps the source style with the current field (the style term's target), then propagation (the four neighbour
  shifts of the whole field, +-1, in random order), ``random_search_steps`` random steps within
  ``+-random_search_range`` px, each accepted per pixel where the cost drops. Cost =
  ``guide_weight * SSD(guide patches) + SSD(style patches)`` on 0..255 values, zero padding outside the image.
* remapping = patch voting: the output pixel is the mean of ``source[nnf(p + d) - d]`` over every in-image patch
  offset ``d`` whose vote lands inside the image (the CUDA ``remap`` kernel).
* ``PyramidPatchMatcher``: ``int(log2(min(H, W) / max_patch))`` levels, frames resized with ``INTER_AREA``, identity
  initial field, upsampling ``2 nnf (+1 on odd rows/columns)``.
* fast mode (tree of partial sums, left and right trees, merged with the frame itself counted once), balanced mode
  (every pair in the window, running mean), accurate mode (style cost against the mean remapped style of the batch).
  Defaults: minimum patch 5, 5 iterations, guide weight 10, batch 8; window as given (the web UI's default is 15,
  DiffSynth's examples use 60).

Deviations, on purpose: the original's known faults are not reproduced (an int64 identity field handed to int32
kernels; ``update_nnf`` indexing odd rows with ``range(batch size)`` instead of the height); random numbers come from
numpy instead of cupy. The two CUDA kernels are C loops here (compiled on first use with the system's C compiler,
OpenMP over rows), so the numbers are the algorithm's, at CPU speed.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

_C = r"""
#include <stddef.h>
/* FastBlend's remap kernel: out[p] = mean over in-image d of src[nnf(p+d) - d]; arrays padded by pad. */
void remap(int b, int h, int w, int c, int patch, int pad, const float* src, const int* nnf, float* out) {
    const int r = (patch - 1) / 2, pw = w + 2 * pad, ph = h + 2 * pad;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int z = 0; z < b; z++) for (int x = 0; x < h; x++) {
        const float* s = src + (size_t)z * ph * pw * c;
        float* o = out + (size_t)z * ph * pw * c;
        const int* f = nnf + (size_t)z * h * w * 2;
        for (int y = 0; y < w; y++) {
            const int pid = (x + pad) * pw + (y + pad);
            const int min_px = x < r ? -x : -r, max_px = x + r > h - 1 ? h - 1 - x : r;
            const int min_py = y < r ? -y : -r, max_py = y + r > w - 1 ? w - 1 - y : r;
            int num = 0;
            float acc[16] = {0};
            for (int px = min_px; px <= max_px; px++) for (int py = min_py; py <= max_py; py++) {
                const int nid = (x + px) * w + y + py;
                const int x_ = f[nid * 2] - px, y_ = f[nid * 2 + 1] - py;
                if (x_ < 0 || y_ < 0 || x_ >= h || y_ >= w) continue;
                const int q = (x_ + pad) * pw + (y_ + pad);
                num++;
                for (int k = 0; k < c; k++) acc[k] += s[(size_t)q * c + k];
            }
            for (int k = 0; k < c; k++) o[(size_t)pid * c + k] = num ? acc[k] / num : 0.0f;
        }
    }
}
/* FastBlend's patch_error kernel: err[p] = sum over the patch of (tgt[p+d] - src[nnf(p)+d])^2, padded arrays. */
void patch_error(int b, int h, int w, int c, int patch, int pad, const float* src, const int* nnf,
                 const float* tgt, float* err) {
    const int r = (patch - 1) / 2, pw = w + 2 * pad, ph = h + 2 * pad;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int z = 0; z < b; z++) for (int x = 0; x < h; x++) {
        const float* s = src + (size_t)z * ph * pw * c;
        const float* t = tgt + (size_t)z * ph * pw * c;
        const int* f = nnf + (size_t)z * h * w * 2;
        for (int y = 0; y < w; y++) {
            const int x_ = f[(x * w + y) * 2], y_ = f[(x * w + y) * 2 + 1];
            float e = 0.0f;
            for (int px = -r; px <= r; px++) {
                const float* tr = t + ((size_t)(x + pad + px) * pw + y + pad - r) * c;
                const float* sr = s + ((size_t)(x_ + pad + px) * pw + y_ + pad - r) * c;
                const int len = (2 * r + 1) * c;
                #pragma omp simd reduction(+:e)
                for (int k = 0; k < len; k++) { const float d = tr[k] - sr[k]; e += d * d; }
            }
            err[(size_t)z * h * w + x * w + y] = e;
        }
    }
}
/* One propagation / random-search step fused: where the candidate differs from the current match, its patch error
   replaces the current one if lower (FastBlend's update(); unchanged candidates cannot win a strict "<"). */
void update(int b, int h, int w, int c, int patch, int pad, const float* src, const float* tgt, int* nnf,
            float* err, const int* cand) {
    const int r = (patch - 1) / 2, pw = w + 2 * pad, ph = h + 2 * pad, len = (2 * r + 1) * c;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int z = 0; z < b; z++) for (int x = 0; x < h; x++) {
        const float* s = src + (size_t)z * ph * pw * c;
        const float* t = tgt + (size_t)z * ph * pw * c;
        for (int y = 0; y < w; y++) {
            const size_t i = (size_t)z * h * w + x * w + y;
            const int x_ = cand[i * 2], y_ = cand[i * 2 + 1];
            if (x_ == nnf[i * 2] && y_ == nnf[i * 2 + 1]) continue;
            float e = 0.0f;
            for (int px = -r; px <= r; px++) {
                const float* tr = t + ((size_t)(x + pad + px) * pw + y + pad - r) * c;
                const float* sr = s + ((size_t)(x_ + pad + px) * pw + y_ + pad - r) * c;
                #pragma omp simd reduction(+:e)
                for (int k = 0; k < len; k++) { const float d = tr[k] - sr[k]; e += d * d; }
            }
            if (e < err[i]) { err[i] = e; nnf[i * 2] = x_; nnf[i * 2 + 1] = y_; }
        }
    }
}
"""


# No -ffast-math: a shared object built with it sets flush-to-zero/denormals-are-zero for the WHOLE process when it is
# loaded (crtfastmath.o), which silently changes every later float computation (numpy, torch, hypothesis refuses to run).
_CFLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    tag = hashlib.sha1((_C + " ".join(_CFLAGS)).encode()).hexdigest()[:12]
    folder = Path(os.environ.get("XDG_CACHE_HOME", Path(tempfile.gettempdir()))) / "neurender-fastblend-ref"
    folder.mkdir(parents=True, exist_ok=True)
    so = folder / f"fastblend_{tag}.so"
    if not so.exists():
        src = folder / f"fastblend_{tag}.c"
        src.write_text(_C)
        tmp = folder / f".{tag}.{os.getpid()}.so"
        subprocess.run(["cc", *_CFLAGS, str(src), "-o", str(tmp)], check=True)
        tmp.replace(so)
    lib = ctypes.CDLL(str(so))
    p = ctypes.c_void_p
    for fn in (lib.remap, lib.patch_error, lib.update):
        fn.restype = None
    lib.update.argtypes = [ctypes.c_int] * 6 + [p, p, p, p, p]
    lib.remap.argtypes = [ctypes.c_int] * 6 + [p, p, p]
    lib.patch_error.argtypes = [ctypes.c_int] * 6 + [p, p, p, p]
    return lib


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


class PatchMatcher:
    """One pyramid level (``FastBlend.patch_match.PatchMatcher``), CPU."""

    def __init__(self, height, width, channel, minimum_patch_size, num_iter=5, guide_weight=10.0,
                 random_search_steps=3, random_search_range=4, use_mean_target_style=False, rng=None):
        self.height, self.width, self.channel = height, width, channel
        self.num_iter, self.guide_weight = num_iter, guide_weight
        self.random_search_steps, self.random_search_range = random_search_steps, random_search_range
        self.use_mean_target_style = use_mean_target_style
        self.patch_size_list = [minimum_patch_size + i * 2 for i in range(num_iter)][::-1]
        self.pad_size = self.patch_size_list[0] // 2
        self.rng = rng or np.random.default_rng(0)
        self.patch_size = self.patch_size_list[0]
        self._joint = None

    def pad_image(self, image):
        p = self.pad_size
        return np.ascontiguousarray(np.pad(image, ((0, 0), (p, p), (p, p), (0, 0))), dtype=np.float32)

    def unpad_image(self, image):
        p = self.pad_size
        return image[:, p:-p, p:-p, :]

    def apply_nnf_to_image(self, nnf, source):
        b, c = source.shape[0], source.shape[-1]
        out = np.zeros((b, self.height + 2 * self.pad_size, self.width + 2 * self.pad_size, c), np.float32)
        _lib().remap(b, self.height, self.width, c, self.patch_size, self.pad_size, _ptr(source),
                     _ptr(np.ascontiguousarray(nnf, np.int32)), _ptr(out))
        return out

    def get_patch_error(self, source, nnf, target):
        b, c = source.shape[0], source.shape[-1]
        err = np.zeros((b, self.height, self.width), np.float32)
        _lib().patch_error(b, self.height, self.width, c, self.patch_size, self.pad_size, _ptr(source),
                           _ptr(np.ascontiguousarray(nnf, np.int32)), _ptr(np.ascontiguousarray(target)), _ptr(err))
        return err

    def get_error(self, source_guide, target_guide, source_style, target_style, nnf):
        error_guide = self.get_patch_error(source_guide, nnf, target_guide)
        if self.use_mean_target_style:
            target_style = self.apply_nnf_to_image(nnf, source_style)
            target_style = np.repeat(target_style.mean(axis=0, keepdims=True), source_guide.shape[0], axis=0)
        error_style = self.get_patch_error(source_style, nnf, target_style)
        return error_guide * self.guide_weight + error_style

    def clamp_bound(self, nnf):
        nnf[..., 0] = np.clip(nnf[..., 0], 0, self.height - 1)
        nnf[..., 1] = np.clip(nnf[..., 1], 0, self.width - 1)
        return nnf

    def random_step(self, nnf, r):
        step = self.rng.integers(-r, r + 1, size=nnf.shape, dtype=np.int32)
        return self.clamp_bound(nnf + step)

    def neighboor_step(self, nnf, d):
        if d == 0:
            upd = np.concatenate([nnf[:, :1], nnf[:, :-1]], axis=1)
            upd[..., 0] += 1
        elif d == 1:
            upd = np.concatenate([nnf[:, :, :1], nnf[:, :, :-1]], axis=2)
            upd[..., 1] += 1
        elif d == 2:
            upd = np.concatenate([nnf[:, 1:], nnf[:, -1:]], axis=1)
            upd[..., 0] -= 1
        else:
            upd = np.concatenate([nnf[:, :, 1:], nnf[:, :, -1:]], axis=2)
            upd[..., 1] -= 1
        return self.clamp_bound(upd)

    def update(self, sg, tg, ss, ts, nnf, err, upd_nnf):
        if self._joint is not None:  # guide and style patches in one 6-channel SSD (sqrt(guide_weight) on the guide)
            src, tgt = self._joint
            _lib().update(nnf.shape[0], self.height, self.width, src.shape[-1], self.patch_size, self.pad_size,
                          _ptr(src), _ptr(tgt), _ptr(nnf), _ptr(err), _ptr(np.ascontiguousarray(upd_nnf, np.int32)))
            return nnf, err
        upd_err = self.get_error(sg, tg, ss, ts, upd_nnf)
        idx = upd_err < err
        nnf[idx] = upd_nnf[idx]
        err[idx] = upd_err[idx]
        return nnf, err

    def iteration(self, sg, tg, ss, ts, nnf, err):
        for d in self.rng.permutation(4):
            nnf, err = self.update(sg, tg, ss, ts, nnf, err, self.neighboor_step(nnf, d))
        for _ in range(self.random_search_steps):
            nnf, err = self.update(sg, tg, ss, ts, nnf, err, self.random_step(nnf, self.random_search_range))
        return nnf, err

    def estimate_nnf(self, source_guide, target_guide, source_style, nnf):
        sg, tg, ss = self.pad_image(source_guide), self.pad_image(target_guide), self.pad_image(source_style)
        for it in range(self.num_iter):
            self.patch_size = self.patch_size_list[it]
            ts = self.apply_nnf_to_image(nnf, ss)
            self._joint = None
            err = self.get_error(sg, tg, ss, ts, nnf)
            if not self.use_mean_target_style:
                k = np.float32(np.sqrt(self.guide_weight))
                self._joint = (np.ascontiguousarray(np.concatenate([sg * k, ss], -1)),
                               np.ascontiguousarray(np.concatenate([tg * k, ts], -1)))
                nnf = np.ascontiguousarray(nnf, np.int32)
            nnf, err = self.iteration(sg, tg, ss, ts, nnf, err)
        return nnf, self.unpad_image(self.apply_nnf_to_image(nnf, ss))


class PyramidPatchMatcher:
    """``FastBlend.patch_match.PyramidPatchMatcher``, CPU (identity initialisation)."""

    def __init__(self, image_height, image_width, channel, minimum_patch_size=5, num_iter=5, guide_weight=10.0,
                 use_mean_target_style=False, seed=0):
        maximum_patch_size = minimum_patch_size + (num_iter - 1) * 2
        self.pyramid_level = int(np.log2(min(image_height, image_width) / maximum_patch_size))
        self.heights = [image_height // (2 ** (self.pyramid_level - 1 - lv)) for lv in range(self.pyramid_level)]
        self.widths = [image_width // (2 ** (self.pyramid_level - 1 - lv)) for lv in range(self.pyramid_level)]
        rng = np.random.default_rng(seed)
        self.matchers = [PatchMatcher(h, w, channel, minimum_patch_size, num_iter, guide_weight,
                                      use_mean_target_style=use_mean_target_style, rng=rng)
                         for h, w in zip(self.heights, self.widths)]

    def resample(self, images, level):
        h, w = self.heights[level], self.widths[level]
        return np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images]).astype(np.float32)

    def initialize_nnf(self, batch):
        h, w = self.heights[0], self.widths[0]
        ys, xs = np.mgrid[0:h, 0:w]
        return np.ascontiguousarray(np.repeat(np.stack([ys, xs], -1)[None], batch, 0), dtype=np.int32)

    def update_nnf(self, nnf, level):
        nnf = nnf.repeat(2, axis=1).repeat(2, axis=2) * 2
        nnf[:, 1::2, :, 0] += 1
        nnf[:, :, 1::2, 1] += 1
        h, w = self.heights[level], self.widths[level]
        if nnf.shape[1] != h or nnf.shape[2] != w:
            nnf = np.stack([cv2.resize(n.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for n in nnf])
            nnf = self.matchers[level].clamp_bound(nnf.astype(np.int32))
        return np.ascontiguousarray(nnf, dtype=np.int32)

    def estimate_nnf(self, source_guide, target_guide, source_style):
        nnf = None
        for level in range(self.pyramid_level):
            nnf = self.initialize_nnf(source_guide.shape[0]) if level == 0 else self.update_nnf(nnf, level)
            nnf, target_style = self.matchers[level].estimate_nnf(
                self.resample(source_guide, level), self.resample(target_guide, level),
                self.resample(source_style, level), nnf)
        return nnf, target_style


# ------------------------------------------------------------------------------------------------------------------
# Runners (frames: lists of (H, W, 3) float32 arrays on 0..255)
# ------------------------------------------------------------------------------------------------------------------


def _batched(engine, tasks, guide, style_of, batch_size, sink):
    for k in range(0, len(tasks), batch_size):
        chunk = tasks[k: k + batch_size]
        sg = np.stack([guide[t[0]] for t in chunk])
        tg = np.stack([guide[t[1]] for t in chunk])
        ss = np.stack([style_of(t) for t in chunk])
        _, remapped = engine.estimate_nnf(sg, tg, ss)
        for t, r in zip(chunk, remapped):
            sink(t, r)


def _task_list(n):
    tasks = []
    max_level = 1
    while (1 << max_level) <= n:
        max_level += 1
    for i in range(n):
        j = i
        for level in range(max_level):
            if i & (1 << level):
                continue
            j |= 1 << level
            if j >= n:
                break
            tasks.append((i, j, level + 1))
    tasks.sort(key=lambda t: t[2])
    return tasks


def _tree_query(lo, hi):
    nodes, idx = [], hi
    while idx >= lo:
        level = 0
        while (1 << level) & idx and idx - (1 << level + 1) + 1 >= lo:
            level += 1
        nodes.append((idx, level))
        idx -= 1 << level
    return nodes


def _fast_side(guide, style, engine, window, batch_size):
    n = len(guide)
    table = [[(style[i], 1)] for i in range(n)]

    def add(task, result):
        _, target, level = task
        if len(table[target]) == level:
            table[target].append((result, 1))
        else:
            frame, weight = table[target][level]
            table[target][level] = (frame * (weight / (weight + 1)) + result / (weight + 1), weight + 1)

    _batched(engine, _task_list(n), guide, lambda t: style[t[0]], batch_size, add)
    for i in range(n):  # remapping table -> blending table
        for j in range(1, len(table[i])):
            (f1, w1), (f2, w2) = table[i][j - 1], table[i][j]
            table[i][j] = ((f1 + f2) / 2, w1 + w2)
    tasks, result = [], []
    for target in range(n):
        for source, level in _tree_query(max(target - window, 0), target):
            if source != target:
                tasks.append((source, target, level))
            else:
                result.append(table[target][level])

    def merge(task, frame2):
        source, target, level = task
        f1, w1 = result[target]
        w2 = table[source][level][1]
        result[target] = (f1 * (w1 / (w1 + w2)) + frame2 * (w2 / (w1 + w2)), w1 + w2)

    _batched(engine, tasks, guide, lambda t: table[t[0]][t[2]][0], batch_size, merge)
    return result


def fastblend(style: np.ndarray, guide: np.ndarray, mode: str = "fast", window: int = 15, batch_size: int = 8,
              minimum_patch_size: int = 5, num_iter: int = 5, guide_weight: float = 10.0, seed: int = 0) -> np.ndarray:
    """FastBlend on (N, H, W, 3) float frames in 0..1 (``style`` = the frames to deflicker, ``guide`` = the video that
    defines the motion); returns (N, H, W, 3) float32 in 0..1, quantised to 8 bits as FastBlend writes its PNGs."""
    s = [f.astype(np.float32) * 255.0 for f in style]
    g = [f.astype(np.float32) * 255.0 for f in guide]
    n, h, w = len(s), s[0].shape[0], s[0].shape[1]
    engine = PyramidPatchMatcher(h, w, 3, minimum_patch_size, num_iter, guide_weight,
                                 use_mean_target_style=(mode == "accurate"), seed=seed)
    if mode == "fast":
        left = _fast_side(g, s, engine, window, batch_size)
        right = _fast_side(g[::-1], s[::-1], engine, window, batch_size)[::-1]
        out = []
        for (fl, wl), fm, (fr, wr) in zip(left, s, right):
            wt = wl - 1 + wr
            out.append(fl * (wl / wt) - fm / wt + fr * (wr / wt))
    elif mode == "balanced":
        acc = [(f.copy(), 1) for f in s]

        def add(task, result):
            frame, weight = acc[task[1]]
            acc[task[1]] = (frame * (weight / (weight + 1)) + result / (weight + 1), weight + 1)

        tasks = [(src, tgt) for tgt in range(n) for src in range(tgt - window, tgt + window + 1)
                 if 0 <= src < n and src != tgt]
        _batched(engine, tasks, g, lambda t: s[t[0]], batch_size, add)
        out = [a[0] for a in acc]
    elif mode == "accurate":
        out = []
        for tgt in range(n):
            lo, hi = max(tgt - window, 0), min(tgt + window + 1, n)
            remapped = []
            for i in range(lo, hi, batch_size):
                j = min(i + batch_size, hi)
                _, r = engine.estimate_nnf(np.stack(g[i:j]), np.stack([g[tgt]] * (j - i)), np.stack(s[i:j]))
                remapped.append(r)
            out.append(np.concatenate(remapped).mean(0))
    else:
        raise ValueError(f"mode {mode!r} is not fast, balanced or accurate")
    return (np.stack(out).clip(0, 255).astype(np.uint8).astype(np.float32) / 255.0)
