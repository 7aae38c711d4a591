"""Where correspondences come from: exact passes first, PatchMatch only when no motion data exists.

``MotionSource`` holds what it needs of a shot's passes (depth, object index, the two adjacent flows of the Vector
pass, cameras; at the pass resolution) and answers ``correspondence(a, b)`` for frame positions a, b at a target size
(the render size, or the latent size = render / 8). Methods:

* ``exact`` -- adjacent frames straight from the Vector pass; near frames (``|a - b| <= chain_limit``) by chaining
  adjacent flows (static points hidden in an intermediate frame are filled in by reprojection); far frames by depth + camera reprojection (``reprojection.py``), trusted only on points that the
  Vector pass shows as static (their adjacent motion equals the camera-induced motion), since reprojection knows
  nothing of moving objects. Visibility from ``visibility.py`` (depth test, forward/backward consistency, object index).
* ``flow`` -- estimated optical flow (OpenCV DIS, ``estimated_flow.py``) between adjacent guide images (the Combined
  pass, or the frames themselves), far pairs chained like the Vector pass; the best measured choice without passes.
* ``patchmatch`` -- estimated from guide images (the Combined pass, or the frames themselves) by the PatchMatch
  module ``neurender.deflicker.patchmatch`` (Barnes et al. 2009), initialised with exact motion when there is some.
* ``auto`` -- ``exact`` when the passes carry a Vector pass or cameras, else ``flow``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch

from neurender.contract import FrameCamera
from neurender.deflicker.correspondence import Correspondence, compose
from neurender.deflicker.reprojection import reproject
from neurender.deflicker.vector_pass import flow_to_next, flow_to_previous
from neurender.deflicker.visibility import (
    DEPTH_TOLERANCE_REPROJECT,
    FB_TOLERANCE_PX,
    FB_TOLERANCE_REL,
    footprint_pure,
    visibility,
)
from neurender.errors import InputError

log = logging.getLogger(__name__)

METHODS = ("auto", "exact", "flow", "patchmatch")
DEFAULT_CHAIN_LIMIT = 8
INTERPOLATIONS = ("bilinear", "bicubic")
DEFAULT_INTERPOLATION = "bilinear"
"""How images will be sampled along the correspondences. ``bilinear`` is fast (the in-iteration hooks); ``bicubic``
keeps fine detail that bilinear blurs (detail kept 0.88 vs 0.71 on a photo moving by sub-pixel steps) at about 4x the
cost on CPU (the post pass and the CLI); where its 4x4 footprint would reach another object (``Correspondence.sharp``
= 0) the blend samples those pixels bilinearly instead."""
PATCHMATCH_RADIUS_WITH_INIT = 4
"""Search radius (pixels) when PatchMatch starts from exact motion (it only refines it)."""


@dataclass
class _FrameData:
    frame: int
    depth: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None
    to_previous: Optional[torch.Tensor] = None
    to_next: Optional[torch.Tensor] = None
    camera: Optional[FrameCamera] = None


def _tensor(a) -> Optional[torch.Tensor]:
    if a is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a


class MotionSource:
    """Correspondences between the frames of one shot, at ``height`` x ``width``.

    ``passes``: ``FramePasses`` of consecutive positions (or None for a plain image sequence); ``guides``: optional
    (H, W, 3) float images per position for PatchMatch (defaults to the Combined pass); ``interpolation``: how the
    blend will sample images along the correspondences (``bicubic`` or ``bilinear``).
    """

    def __init__(
        self,
        passes: Optional[Sequence] = None,
        *,
        height: Optional[int] = None,
        width: Optional[int] = None,
        guides: Optional[Sequence] = None,
        chain_limit: int = DEFAULT_CHAIN_LIMIT,
        interpolation: str = DEFAULT_INTERPOLATION,
    ) -> None:
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}")
        self.interpolation = interpolation
        self._frames: list[_FrameData] = []
        self._guides: list[Optional[torch.Tensor]] = []
        self.pass_size: Optional[tuple[int, int]] = None
        for fp in passes or ():
            self._frames.append(
                _FrameData(
                    frame=int(fp.frame),
                    depth=_tensor(fp.depth),
                    index=_tensor(fp.object_index),
                    to_previous=flow_to_previous(fp.vector) if fp.vector is not None else None,
                    to_next=flow_to_next(fp.vector) if fp.vector is not None else None,
                    camera=fp.camera,
                )
            )
            self._guides.append(_tensor(fp.combined).float() if fp.combined is not None else None)
            self.pass_size = tuple(fp.depth.shape[:2])  # type: ignore[assignment]
        if guides is not None:
            if self._frames and len(guides) != len(self._frames):
                raise InputError(f"{len(guides)} guide images were given for {len(self._frames)} frames")
            self._guides = [_tensor(np.asarray(g, dtype=np.float32)) if g is not None else None for g in guides]
        self.count = len(self._frames) or len(self._guides)
        if self.count == 0:
            raise InputError("deflicker needs at least one frame")
        ref = self.pass_size or tuple(self._guides[0].shape[:2])  # type: ignore[union-attr]
        self.height = int(height or ref[0])
        self.width = int(width or ref[1])
        self.chain_limit = chain_limit
        self._adjacent: dict[tuple[int, int], Correspondence] = {}
        self._static: dict[int, torch.Tensor] = {}
        self._reverse: dict[tuple[int, int], Correspondence] = {}
        self._flow: dict[tuple, Correspondence] = {}
        """Estimated (DIS) adjacent pairs and their chains."""
        """PatchMatch pairs not yet asked for: each search yields both directions (kept until the reverse is used)."""

    @classmethod
    def from_folder(cls, folder, *, height: Optional[int] = None, width: Optional[int] = None,
                    frames: Optional[Sequence[int]] = None, guides: Optional[Sequence] = None,
                    **kwargs) -> "MotionSource":
        """Read the passes of ``frames`` (default: all selected frames) of a ``PassFolder``, once each."""
        numbers = list(frames if frames is not None else folder.frames)
        return cls([folder.read(f) for f in numbers], height=height, width=width, guides=guides, **kwargs)

    # ----------------------------------------------------------------------------------------------------------
    @property
    def frame_numbers(self) -> list[int]:
        return [f.frame for f in self._frames]

    def _has_vectors(self) -> bool:
        return bool(self._frames) and all(f.to_next is not None for f in self._frames)

    def _has_cameras(self) -> bool:
        return bool(self._frames) and all(f.camera is not None and f.depth is not None for f in self._frames)

    def resolve(self, method: str = "auto") -> str:
        """``exact`` or ``patchmatch`` for ``method``; raises ``InputError`` if ``exact`` is impossible."""
        if method not in METHODS:
            raise InputError(f"deflicker method {method!r} is not one of {', '.join(METHODS)}")
        exact_possible = self._has_vectors() or self._has_cameras()
        if method == "exact" and not exact_possible:
            raise InputError(
                "deflicker method 'exact' needs a pass folder with a vector pass or cameras; use 'patchmatch' or 'auto'"
            )
        if method == "auto":
            return "exact" if exact_possible else "flow"
        return method

    def _adjacent_numbers(self, a: int, b: int) -> bool:
        return abs(self._frames[a].frame - self._frames[b].frame) == 1

    # ----------------------------------------------------------------------------------------------------------
    def _adjacent_exact(self, a: int, b: int) -> Correspondence:
        """a -> b = a +- 1 from the Vector pass, at the pass resolution."""
        key = (a, b)
        if key not in self._adjacent:
            fa, fb = self._frames[a], self._frames[b]
            forward = b > a
            flow = fa.to_next if forward else fa.to_previous
            back = fb.to_previous if forward else fb.to_next
            if fa.camera is not None and fb.camera is not None and fa.depth is not None and fb.depth is not None:
                # the Vector pass is zero where no geometry was hit; the sky still turns with the camera
                flow = self._with_sky_motion(fa.depth, flow, fa.camera, fb.camera)
                back = self._with_sky_motion(fb.depth, back, fb.camera, fa.camera)
            valid = visibility(flow, depth_i=fa.depth, depth_j=fb.depth, flow_ji=back, index_i=fa.index,
                               index_j=fb.index)
            self._adjacent[key] = Correspondence(flow, valid, self._sharp(flow, fa, fb))
        return self._adjacent[key]

    @staticmethod
    def _with_sky_motion(depth: torch.Tensor, flow: torch.Tensor, cam_a: FrameCamera, cam_b: FrameCamera) -> torch.Tensor:
        sky = ~torch.isfinite(depth)
        if not bool(sky.any()):
            return flow
        rotation, _ = reproject(depth, cam_a, cam_b)
        return torch.where(sky[..., None], rotation, flow)

    def static_mask(self, a: int) -> torch.Tensor:
        """(H, W) bool at the pass resolution: points of frame a that do not move in the world (Vector pass motion
        equals the camera-induced motion towards an adjacent frame); all True without a Vector pass."""
        if a in self._static:
            return self._static[a]
        fa = self._frames[a]
        h, w = self.pass_size  # type: ignore[misc]
        static = torch.ones(h, w, dtype=torch.bool)
        if fa.to_next is not None and fa.camera is not None and fa.depth is not None:
            for b, flow in ((a + 1, fa.to_next), (a - 1, fa.to_previous)):
                if 0 <= b < self.count and self._frames[b].camera is not None and self._adjacent_numbers(a, b):
                    camera_flow, _ = reproject(fa.depth, fa.camera, self._frames[b].camera)
                    error = (camera_flow - flow).norm(dim=-1)
                    static &= (error <= FB_TOLERANCE_PX + FB_TOLERANCE_REL * flow.norm(dim=-1)) | ~torch.isfinite(fa.depth)
                    break
        self._static[a] = static
        return static

    def _reprojected(self, a: int, b: int) -> Correspondence:
        fa, fb = self._frames[a], self._frames[b]
        flow, expected = reproject(fa.depth, fa.camera, fb.camera)
        valid = visibility(flow, depth_j=fb.depth, expected_depth=expected, depth_tolerance=DEPTH_TOLERANCE_REPROJECT,
                           index_i=fa.index, index_j=fb.index)
        return Correspondence(flow, valid * self.static_mask(a).float(), self._sharp(flow, fa, fb))

    def _sharp(self, flow: torch.Tensor, fa: _FrameData, fb: _FrameData) -> Optional[torch.Tensor]:
        """Where a wide footprint around the match stays on one object (bicubic taps; the fusion's coarse levels)."""
        if fa.index is None or fb.index is None:
            return None
        return footprint_pure(flow, fa.index, fb.index)

    def _can_chain(self, a: int, b: int) -> bool:
        step = 1 if b > a else -1
        return self._has_vectors() and all(self._adjacent_numbers(k, k + step) for k in range(a, b, step))

    def _chained(self, a: int, b: int) -> Correspondence:
        step = 1 if b > a else -1
        c = self._adjacent_exact(a, a + step)
        for k in range(a + step, b, step):
            c = compose(c, self._adjacent_exact(k, k + step))
        return c

    def _exact(self, a: int, b: int) -> Correspondence:
        near = abs(a - b) <= self.chain_limit
        if near and self._can_chain(a, b):
            chained = self._chained(a, b)
            if abs(a - b) == 1 or not self._has_cameras():
                return chained
            # a static point hidden in an intermediate frame breaks the chain but is still visible in b
            fill = self._reprojected(a, b)
            use = (chained.valid < 0.5) & (fill.valid >= 0.5)
            sharp = None
            if chained.sharp is not None and fill.sharp is not None:
                sharp = torch.where(use, fill.sharp, chained.sharp)
            return Correspondence(torch.where(use[..., None], fill.flow, chained.flow),
                                  torch.where(use, fill.valid, chained.valid), sharp)
        if self._has_cameras():
            return self._reprojected(a, b)
        if self._can_chain(a, b):
            return self._chained(a, b)
        raise InputError(
            f"frames {self._frames[a].frame} and {self._frames[b].frame} have no exact motion between them "
            "(not consecutive and no cameras)"
        )

    def _adjacent_estimated(self, a: int, b: int) -> Correspondence:
        """a -> b = a +- 1 by DIS on the guides (both directions from one call), at the guide resolution."""
        if (a, b) not in self._flow:
            from neurender.deflicker.estimated_flow import dis_pair

            ga, gb = self._guides[a], self._guides[b]
            if ga is None or gb is None:
                raise InputError("the estimated-flow deflicker needs guide images (a Combined pass or the frames)")
            self._flow[(a, b)], self._flow[(b, a)] = dis_pair(ga, gb)
        return self._flow[(a, b)]

    def _estimated(self, a: int, b: int) -> Correspondence:
        """a -> b by chaining adjacent DIS flows (cached, so a window of chains costs one link each)."""
        key = ("chain", a, b)
        if key not in self._flow:
            step = 1 if b > a else -1
            if abs(b - a) == 1:
                self._flow[key] = self._adjacent_estimated(a, b)
            else:
                self._flow[key] = compose(self._estimated(a, b - step), self._adjacent_estimated(b - step, b))
        return self._flow[key]

    def _patchmatch(self, a: int, b: int, init: Optional[Correspondence]) -> Correspondence:
        """a -> b by PatchMatch; the b -> a field of the same search is kept for the reverse query."""
        try:
            from neurender.deflicker.patchmatch import estimate_correspondence_pair
        except ModuleNotFoundError as exc:  # pragma: no cover - the module ships with neurender
            raise InputError("the PatchMatch deflicker is not available in this installation") from exc
        ga, gb = self._guides[a], self._guides[b]
        if ga is None or gb is None:
            raise InputError("PatchMatch deflicker needs guide images (a Combined pass or the frames themselves)")
        if init is not None and init.shape != tuple(ga.shape[:2]):
            init = init.resized(int(ga.shape[0]), int(ga.shape[1]))
        kwargs = {"init_flow": init.flow if init is not None else None}
        if init is not None:
            kwargs["radius"] = PATCHMATCH_RADIUS_WITH_INIT
        forward, backward = estimate_correspondence_pair(ga, gb, **kwargs)
        self._reverse[(b, a)] = backward
        return forward

    # ----------------------------------------------------------------------------------------------------------
    def correspondence(self, a: int, b: int, method: str = "auto") -> Correspondence:
        """Frame position a -> frame position b at the target size."""
        if not (0 <= a < self.count and 0 <= b < self.count):
            raise IndexError(f"frame positions {a}, {b} outside 0..{self.count - 1}")
        if a == b:
            return Correspondence.identity(self.height, self.width)
        resolved = self.resolve(method)
        if resolved == "exact":
            c = self._exact(a, b)
        elif resolved == "flow":
            c = self._estimated(a, b)
        elif (a, b) in self._reverse:
            c = self._reverse.pop((a, b))
        else:
            init = None
            if self._frames and (self._has_vectors() or self._has_cameras()):
                try:
                    init = self._exact(a, b)
                except InputError:
                    init = None
            c = self._patchmatch(a, b, init)
        return c.resized(self.height, self.width)


def correspondences(
    source: Union["MotionSource", Sequence, object],
    i: int,
    j: int,
    method: str = "auto",
    *,
    size: Optional[tuple[int, int]] = None,
) -> Correspondence:
    """Correspondence from frame number ``i`` to frame number ``j``.

    ``source`` is a ``PassFolder``, a sequence of ``FramePasses`` or a ``MotionSource``; ``size`` is an optional
    ``(height, width)`` target grid. For repeated queries build one ``MotionSource`` and reuse it.
    """
    if isinstance(source, MotionSource):
        ms = source
    elif hasattr(source, "read") and hasattr(source, "frames"):
        lo, hi = min(i, j), max(i, j)
        numbers = [f for f in source.frames if lo <= f <= hi]
        ms = MotionSource.from_folder(source, frames=numbers, height=size[0] if size else None,
                                      width=size[1] if size else None)
    else:
        ms = MotionSource(list(source), height=size[0] if size else None, width=size[1] if size else None)
    numbers = ms.frame_numbers
    if i not in numbers or j not in numbers:
        raise InputError(f"frames {i} and {j} must both be part of the sequence ({numbers[0]}-{numbers[-1]})")
    c = ms.correspondence(numbers.index(i), numbers.index(j), method)
    if size is not None:
        c = c.resized(*size)
    return c
