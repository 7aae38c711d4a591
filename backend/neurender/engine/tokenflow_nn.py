"""Nearest-neighbour token correspondences from diffusion features, in bounded memory (TokenFlow's fallback).

TokenFlow (Geyer et al. 2023, arXiv 2307.10373, Sec. 4.2, eq. 5) matches every token of a frame to its nearest
neighbour among a keyframe's tokens by cosine similarity of the self-attention input features:
``gamma[p] = argmax_q  <x_f[p], x_k[q]> / (|x_f[p]| |x_k[q]|)``. Their code builds the whole similarity matrix of
all frames against all keyframes at once, which is why it runs out of memory at a few hundred frames.

Here the matrix is never held: queries are processed in row blocks so that one block of similarities holds at most
``max_elements`` numbers, whatever the number of frames or keyframes. Working memory besides the int64 result is
bounded by ``memory_bound_bytes(Tk, C, max_elements)`` = ``4 * (rows Tk + 2 Tk C + 2 rows C) + 8 rows`` bytes
(a similarity block of rows Tk <= max(max_elements, Tk) numbers, the normalised keys and one normalised query
block with their temporaries; rows = max(1, max_elements // Tk)), independent of the number of frames; a test measures it. neurender uses this only where no
pass exists to give exact correspondences (``tokenflow_correspondence.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_MAX_ELEMENTS = 1 << 20
"""Similarity numbers held at once by default (4 MiB in float32)."""


def block_rows(keys: int, max_elements: int) -> int:
    """Query rows per block so that a (rows, keys) similarity block has at most ``max_elements`` entries."""
    return max(1, int(max_elements) // max(1, int(keys)))


def memory_bound_bytes(keys: int, channels: int, max_elements: int = DEFAULT_MAX_ELEMENTS) -> int:
    """Upper bound of the working memory (bytes, float32) of ``nearest_tokens``, excluding its result."""
    rows = block_rows(keys, max_elements)
    return 4 * (rows * keys + 2 * keys * channels + 2 * rows * channels) + 8 * rows


def nearest_tokens(query: torch.Tensor, keys: torch.Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """(Tq, C) query tokens, (Tk, C) key tokens -> (Tq,) index of each query's cosine nearest key token."""
    if query.ndim != 2 or keys.ndim != 2 or query.shape[1] != keys.shape[1]:
        raise ValueError(f"nearest_tokens needs (Tq, C) and (Tk, C) tokens, got {tuple(query.shape)}, {tuple(keys.shape)}")
    k = F.normalize(keys.float(), dim=-1)
    rows = block_rows(k.shape[0], max_elements)
    out = torch.empty(query.shape[0], dtype=torch.long, device=query.device)
    for s in range(0, query.shape[0], rows):
        q = F.normalize(query[s : s + rows].float(), dim=-1)
        out[s : s + rows] = (q @ k.T).argmax(dim=-1)
    return out


def nearest_tokens_to_keyframes(
    frames: torch.Tensor, keyframes: torch.Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> torch.Tensor:
    """(n, T, C) frame tokens, (K, T, C) keyframe tokens -> (n, K, T) nearest-token indices, frame by frame.

    Only one (rows, T) similarity block exists at any time, so peak memory does not depend on n or K.
    """
    n, k = frames.shape[0], keyframes.shape[0]
    out = torch.empty(n, k, frames.shape[1], dtype=torch.long, device=frames.device)
    for i in range(n):
        for j in range(k):
            out[i, j] = nearest_tokens(frames[i], keyframes[j], max_elements)
    return out
