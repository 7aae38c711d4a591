"""Memory options for 6-8 GB cards; each one leaves the result unchanged (or, for VAE tiling, nearly so).

* Attention slicing (``attention_slice`` = N query tokens): our attention processors (cross-frame, keyframes) call
  ``sdpa`` below, which computes ``softmax(QK^T)V`` for at most N query rows at a time, so the attention matrix of
  cross-frame attention (3x the keys of plain self-attention at 64x64 latents) is never held whole; diffusers' own
  processors (cross-attention; self-attention in mode ``off``) run one batch item at a time. Rows of attention are
  independent, so the output is the unsliced one up to float rounding. (On CUDA, SDPA's flash / memory-efficient
  kernels already avoid the full matrix in float16; slicing matters for float32, older cards and MPS.)
* VAE slicing: decode/encode one frame at a time instead of ``batch_size`` frames (exact: the VAE is per frame).
* VAE tiling: diffusers' ``AutoencoderKL`` tiled decode/encode (overlapping tiles of ``tile_sample_min_size``
  pixels, blended linearly over the overlap); bounds the VAE's memory by the tile, not the frame. Tiles see less
  context, so the frames differ slightly (bounded in tests/backend/test_memory_options.py).
* Model CPU offload (diffusers' ``enable_model_cpu_offload``, done here with plain forward pre-hooks): the text
  encoder, the UNet with its ControlNets, and the VAE wait in CPU memory and are moved to the device right before
  they run, the previously active group back to the CPU. Peak weights on the card: the UNet + ControlNets only.
  The denoising state and every other tensor are on the execution device (``execution_device``).

The sampler applies them from ``SamplerOptions``; the job runner from ``RenderSettings`` (``attention_slice``,
``vae_slicing``, ``vae_tiling``, ``cpu_offload``).
"""

from __future__ import annotations

import contextvars
import logging
from contextlib import contextmanager, nullcontext
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

_SLICE: contextvars.ContextVar[int] = contextvars.ContextVar("neurender_attention_slice", default=0)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, attn_mask)`` for (B, heads, T, d) tensors, in slices of at most
    ``attention_slice`` query rows when slicing is on (see ``attention_slicing``)."""
    size = _SLICE.get()
    rows = q.shape[-2]
    if size <= 0 or rows <= size:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=0.0, is_causal=False)
    out = []
    for s in range(0, rows, size):
        mask = None
        if attn_mask is not None:
            mask = attn_mask[..., s : s + size, :] if attn_mask.shape[-2] == rows else attn_mask
        out.append(F.scaled_dot_product_attention(q[..., s : s + size, :], k, v, attn_mask=mask, dropout_p=0.0,
                                                  is_causal=False))
    return torch.cat(out, dim=-2)


class _PerItem:
    """Wraps one of diffusers' attention processors: one batch item per call (attention is per item)."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        n = hidden_states.shape[0]
        if n == 1:
            return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kw)

        def item(x, i):
            return x[i : i + 1] if isinstance(x, torch.Tensor) and x.shape[0] == n else x

        return torch.cat([
            self.processor(attn, item(hidden_states, i), item(encoder_hidden_states, i), item(attention_mask, i),
                           item(temb, i), *args, **kw)
            for i in range(n)
        ])


def _is_stock(processor) -> bool:
    return type(processor).__module__.startswith("diffusers.")


@contextmanager
def attention_slicing(models, size: int) -> Iterator[None]:
    """Attention slicing for the duration of a run (``size`` <= 0: off). Install it before the cross-frame processors:
    it wraps only diffusers' own processors, ours slice through ``sdpa``."""
    if size <= 0:
        yield
        return
    token = _SLICE.set(int(size))
    saved = []
    try:
        for model in models:
            if model is None or not hasattr(model, "attn_processors"):
                continue
            original = dict(model.attn_processors)
            saved.append((model, original))
            model.set_attn_processor({k: _PerItem(p) if _is_stock(p) else p for k, p in original.items()})
        yield
    finally:
        for model, original in saved:
            model.set_attn_processor(original)
        _SLICE.reset(token)


@contextmanager
def vae_tiling(vae, enabled: bool) -> Iterator[None]:
    """diffusers' tiled VAE decode/encode switched on for the block (frames larger than one tile only)."""
    had = getattr(vae, "use_tiling", False)
    vae.use_tiling = bool(enabled) or had
    try:
        yield
    finally:
        vae.use_tiling = had


# ---------------------------------------------------------------------------------------------------------------
# Model CPU offload
# ---------------------------------------------------------------------------------------------------------------


def execution_device(pipe) -> torch.device:
    """The device the models compute on: the offload's device while one is active, else the UNet's."""
    offload = getattr(pipe, "_neurender_offload", None)
    return offload.device if offload is not None else pipe.unet.device


def _groups(pipe) -> list[list[torch.nn.Module]]:
    """The text encoder(s), the UNet with its ControlNets (called alternately every step), the VAE, and any other
    model (e.g. a motion UNet), each group moved as one."""
    components = {k: m for k, m in getattr(pipe, "components", {}).items() if isinstance(m, torch.nn.Module)}
    denoise = [components.pop(k) for k in ("unet", "controlnet") if k in components]
    groups = [[components.pop(k)] for k in ("text_encoder", "text_encoder_2") if k in components]
    groups.append(denoise)
    if "vae" in components:
        groups.append([components.pop("vae")])
    groups += [[m] for m in components.values()]
    return [g for g in groups if g]


class model_offload:  # noqa: N801 - a context manager
    """Model CPU offload for the block (see the module docstring); on exit every model is back on ``device``."""

    def __init__(self, pipe, device, storage: str | torch.device = "cpu") -> None:
        self.pipe = pipe
        self.device = torch.device(device)
        self.storage = torch.device(storage)
        self.groups = _groups(pipe)
        self.active: Optional[int] = None
        self.moves = 0
        self._handles: list = []

    def _activate(self, index: int) -> None:
        if self.active == index:
            return
        if self.active is not None:
            for m in self.groups[self.active]:
                m.to(self.storage)
        for m in self.groups[index]:
            m.to(self.device)
        self.active = index
        self.moves += 1

    def __enter__(self) -> "model_offload":
        for index, group in enumerate(self.groups):
            for model in group:
                model.to(self.storage)
                for module in [model, *model.children()]:
                    self._handles.append(module.register_forward_pre_hook(lambda *_, i=index: self._activate(i)))
        self.pipe._neurender_offload = self
        log.info("model CPU offload: %d groups wait on %s, each moved to %s when it runs", len(self.groups),
                 self.storage, self.device)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for group in self.groups:
            for m in group:
                m.to(self.device)
        self.active = None
        self.pipe._neurender_offload = None


def memory_scope(pipe, device, cpu_offload: bool):
    """``model_offload(pipe, device)`` when ``cpu_offload``, else nothing."""
    return model_offload(pipe, device) if cpu_offload else nullcontext()
