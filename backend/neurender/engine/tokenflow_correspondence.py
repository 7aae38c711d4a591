"""Where a frame's self-attention tokens lie in a keyframe, at every UNet resolution (TokenFlow propagation).

TokenFlow (Geyer et al. 2023, arXiv 2307.10373, eq. 5-6) carries keyframe self-attention outputs to the other frames
along correspondences between tokens. Two sources of correspondences:

* ``PassCorrespondences`` -- exact, from the renderer: a ``neurender.deflicker.motion.MotionSource`` (Vector pass
  chained for near frames, depth + camera reprojection for far ones, visibility tests) at the render size, area
  downsampled to each token grid (flow divided by the factor, validity = visible fraction of each token's pixels,
  ``Correspondence.resized``). Tokens are then sampled bilinearly from the keyframe's output grid.
* ``FeatureCorrespondences`` -- TokenFlow's own: cosine nearest neighbours of the attention input features
  (``tokenflow_nn.py``, blocked so memory stays bounded), used only when no pass gives exact motion.

A UNet token grid at latent size (h, w) is (h, w), then (ceil(h/2), ceil(w/2)) per down block (stride-2 convs with
padding 1), so the grid of an attention layer follows from its token count.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch

from neurender.deflicker.correspondence import Correspondence
from neurender.deflicker.warp import backward_warp
from neurender.engine.tokenflow_nn import DEFAULT_MAX_ELEMENTS, nearest_tokens

FeatureGetter = Callable[[], tuple[torch.Tensor, torch.Tensor]]
"""Returns ((T, C) frame tokens, (T, C) keyframe tokens) of the current attention layer."""


def token_grid(tokens: int, latent_height: int, latent_width: int, levels: int = 8) -> tuple[int, int]:
    """(h, w) of an attention layer holding ``tokens`` tokens in a UNet run on a latent_height x latent_width latent."""
    h, w = latent_height, latent_width
    for _ in range(levels):
        if h * w == tokens:
            return h, w
        h, w = (h + 1) // 2, (w + 1) // 2
    raise ValueError(f"{tokens} tokens match no UNet resolution of a {latent_height}x{latent_width} latent")


@dataclass
class TokenMap:
    """Frame tokens -> keyframe tokens at one grid: ``flow`` (h, w, 2) in tokens or ``index`` (T,); ``valid`` (T,)."""

    valid: torch.Tensor
    flow: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None


def carry(outputs: torch.Tensor, tmap: TokenMap, height: int, width: int) -> torch.Tensor:
    """Keyframe tokens (B, T, C) -> the same tokens moved onto the frame's grid (B, T, C) along ``tmap``."""
    if tmap.index is not None:
        return outputs[:, tmap.index.to(outputs.device)]
    b, t, c = outputs.shape
    grid = outputs.transpose(1, 2).reshape(b, c, height, width)
    flow = tmap.flow.to(outputs.device)[None].expand(b, -1, -1, -1)
    warped = backward_warp(grid, flow)
    return warped.reshape(b, c, t).transpose(1, 2)


class Correspondences(Protocol):
    """Where the tokens of a frame are on a keyframe's token grid (``PassCorrespondences``, ``FeatureCorrespondences``)."""

    needs_features: bool
    """True: ``token_map`` needs the layer's tokens (``features``), so keyframe attention keeps the keyframes' inputs."""

    def token_map(self, frame: int, keyframe: int, height: int, width: int,
                  features: Optional[FeatureGetter] = None) -> TokenMap: ...


class PassCorrespondences:
    """Exact token correspondences from a ``MotionSource`` (render size), cached per (frame, keyframe, grid)."""

    needs_features = False

    def __init__(self, source, cache_size: int = 4096) -> None:
        self.source = source
        self.cache_size = cache_size
        self._full: "OrderedDict[tuple[int, int], Correspondence]" = OrderedDict()
        self._maps: "OrderedDict[tuple[int, int, int, int], TokenMap]" = OrderedDict()

    def _pixels(self, frame: int, keyframe: int) -> Correspondence:
        key = (frame, keyframe)
        if key in self._full:
            self._full.move_to_end(key)
            return self._full[key]
        c = self.source.correspondence(frame, keyframe, "exact")
        self._full[key] = c
        while len(self._full) > 16:  # one chunk's pairs: they are asked for at every resolution in turn
            self._full.popitem(last=False)
        return c

    def token_map(self, frame: int, keyframe: int, height: int, width: int,
                  features: Optional[FeatureGetter] = None) -> TokenMap:
        key = (frame, keyframe, height, width)
        if key in self._maps:
            self._maps.move_to_end(key)
            return self._maps[key]
        c = self._pixels(frame, keyframe).resized(height, width)
        tmap = TokenMap(valid=c.valid.reshape(-1).clone(), flow=c.flow.clone())
        self._maps[key] = tmap
        while len(self._maps) > self.cache_size:
            self._maps.popitem(last=False)
        return tmap


class FeatureCorrespondences:
    """TokenFlow's nearest-neighbour correspondences of attention features (every token valid), bounded memory."""

    needs_features = True

    def __init__(self, max_elements: int = DEFAULT_MAX_ELEMENTS) -> None:
        self.max_elements = max_elements

    def token_map(self, frame: int, keyframe: int, height: int, width: int,
                  features: Optional[FeatureGetter] = None) -> TokenMap:
        if features is None:
            raise ValueError("feature correspondences need the layer's tokens")
        query, keys = features()
        index = nearest_tokens(query, keys, self.max_elements)
        return TokenMap(valid=torch.ones(index.shape[0], device=index.device), index=index)


def correspondences_for(folder, frames, height: int, width: int) -> Correspondences:
    """Exact correspondences (render size) when the pass folder has a Vector pass or cameras, else feature NN."""
    from neurender.deflicker.motion import MotionSource

    source = MotionSource.from_folder(folder, frames=list(frames), height=height, width=width)
    if source.resolve("auto") == "exact":
        return PassCorrespondences(source)
    return FeatureCorrespondences()
