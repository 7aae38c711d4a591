"""Cross-frame attention as diffusers attention processors.

Self-attention (``attn1``) of the UNet and of every ControlNet takes its keys and values from other frames of the
shot instead of (or besides) the frame itself, so that all frames draw appearance from the same anchors:

* ``first``      keys/values of the first frame only (Text2Video-Zero, Khachatryan et al. 2023, Sec. 3.3;
                  diffusers' ``CrossFrameAttnProcessor``). For frame 0 this *is* plain self-attention.
* ``first+prev`` keys/values of [first, previous, self] (Rerender-A-Video, Yang et al. 2023, Sec. 4.1;
                  DiffSynth's paper code uses first/previous/current/next, arXiv 2308.03463 Sec. 3.2).
* ``window``     joint attention: every token of a window of frames attends to all tokens of that window
                  (DiffSynth-Studio's sliding windows; overlapping windows are blended by the sampler with
                  triangular weights).

An optional reference image is one more anchor: its keys/values are appended for every frame.

The sampler evaluates the model over *groups* of frames (chunks that bound memory, or windows). Before each model
call it sets ``CrossFrameState.batch`` to the group's frame positions; processors cache the first frame's and the
group's last frame's keys/values per step so that chunks processed later in the same step can still attend to
them. Groups are always evaluated in increasing frame order within one step.

The math of one call mirrors diffusers' ``AttnProcessor2_0`` exactly (same projections, norms, SDPA, output
projection), so with ``mode == "off"`` or one frame the result is bit-for-bit the stock processor's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from neurender.engine.memory import sdpa


@dataclass
class FrameBatch:
    """The frames of one model call: ``positions`` are indices into the shot (0 = first rendered frame).

    The model's batch is ``cfg`` halves (unconditional, conditional) of ``len(positions)`` frames each.
    """

    positions: list[int]
    cfg: int = 1
    is_reference: bool = False


@dataclass
class CrossFrameState:
    """Shared by all processors of one run: which mode, which step, which frames are in the current call."""

    mode: str = "off"
    step: int = -1
    batch: Optional[FrameBatch] = None
    use_reference: bool = False
    first_from_anchors: bool = False
    """Precomputed anchor frames (``neurender.farm.anchors``, passed as reference batches) replace each group's own
    first frame, so separately rendered chunks of a shot all attend to the same anchors."""
    keep_previous: int = 1
    """``first+prev``: how many trailing frames of each group keep their keys/values for the next group (1 for
    consecutive chunks; overlap + 1 for overlapping windows, whose first frame's predecessor lies inside the
    previous window, engine/motion_windows.py)."""
    processors: list["CrossFrameAttnProcessor"] = field(default_factory=list)


def attention_input(attn, hidden_states: torch.Tensor, temb: Optional[torch.Tensor]):
    """The stock processor's preamble: spatial norm, (B, C, H, W) -> (B, HW, C), group norm.

    Returns the tokens and the 4-D shape to restore (None for 3-D input)."""
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    spatial = None
    if hidden_states.ndim == 4:
        spatial = hidden_states.shape
        b, c, h, w = spatial
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    return hidden_states, spatial


def attention_output(attn, out: torch.Tensor, residual: torch.Tensor, spatial) -> torch.Tensor:
    """The stock processor's epilogue: output projection, dropout, 4-D shape, residual, rescale."""
    return attention_residual(attn, output_projection(attn, out), residual, spatial)


def output_projection(attn, out: torch.Tensor) -> torch.Tensor:
    """The first half of the epilogue: output projection and dropout (tokens stay (B, T, C))."""
    out = attn.to_out[0](out)
    return attn.to_out[1](out)


def attention_residual(attn, out: torch.Tensor, residual: torch.Tensor, spatial) -> torch.Tensor:
    """The second half of the epilogue: the 4-D shape restored, residual connection, rescale."""
    if spatial is not None:
        out = out.transpose(-1, -2).reshape(spatial)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class CrossFrameAttnProcessor:
    """A self-attention processor whose keys/values come from anchor frames (see module docstring)."""

    def __init__(self, state: CrossFrameState) -> None:
        self.state = state
        self._step = -1
        self._first: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._last: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._ref: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        state.processors.append(self)

    def reset(self) -> None:
        self._first = self._ref = None
        self._last = {}

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        temb: Optional[torch.Tensor] = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        state = self.state
        if state.step != self._step:
            self._step = state.step
            self.reset()
        residual = hidden_states
        hidden_states, spatial = attention_input(attn, hidden_states, temb)
        batch_size, tokens, _ = hidden_states.shape

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            source = hidden_states
        elif attn.norm_cross:
            source = attn.norm_encoder_hidden_states(encoder_hidden_states)
        else:
            source = encoder_hidden_states
        key = attn.to_k(source)
        value = attn.to_v(source)

        batch = state.batch
        cross_frame = (
            encoder_hidden_states is None
            and attention_mask is None
            and batch is not None
            and state.mode != "off"
            and batch.cfg * len(batch.positions) == batch_size
        )
        if cross_frame:
            query, key, value = self._gather(query, key, value, batch, state)
        else:
            query, key, value = query[:, None], key[:, None], value[:, None]
        # query/key/value: (B, G, T, C) with G frames-per-sequence groups folded into the batch below.
        b, g, tq, inner = query.shape
        head_dim = inner // attn.heads
        q = query.reshape(b * g, tq, attn.heads, head_dim).transpose(1, 2)
        k = key.reshape(b * g, key.shape[2], attn.heads, head_dim).transpose(1, 2)
        v = value.reshape(b * g, value.shape[2], attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        mask = None
        if attention_mask is not None and not cross_frame:
            mask = attn.prepare_attention_mask(attention_mask, k.shape[2], batch_size)
            mask = mask.view(batch_size, attn.heads, -1, mask.shape[-1])
        out = sdpa(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(batch_size, tokens, attn.heads * head_dim).to(q.dtype)
        return attention_output(attn, out, residual, spatial)

    def _gather(self, query, key, value, batch: FrameBatch, state: CrossFrameState):
        """Rearrange (cfg*n, T, C) projections into per-sequence query and key/value token sets."""
        cfg, n = batch.cfg, len(batch.positions)
        t, c = key.shape[1], key.shape[2]
        q = query.view(cfg, n, t, query.shape[-1])
        k = key.view(cfg, n, t, c)
        v = value.view(cfg, n, t, c)
        if batch.is_reference:
            # A reference pass (reference image or precomputed anchors): plain self-attention, remembered as anchors
            # for the frames; several reference passes in one step add up.
            rk, rv = k.reshape(cfg, n * t, c), v.reshape(cfg, n * t, c)
            if self._ref is not None:
                rk, rv = torch.cat([self._ref[0], rk], dim=1), torch.cat([self._ref[1], rv], dim=1)
            self._ref = (rk, rv)
            return q.reshape(cfg * n, 1, t, -1), k.reshape(cfg * n, 1, t, c), v.reshape(cfg * n, 1, t, c)
        positions = batch.positions
        if 0 in positions:
            i0 = positions.index(0)
            self._first = (k[:, i0], v[:, i0])
        if state.mode == "window":
            # Joint attention: all tokens of the window form one sequence that attends to all of them.
            ks, vs = [k.reshape(cfg, 1, n * t, c)], [v.reshape(cfg, 1, n * t, c)]
            ks, vs = self._with_reference(ks, vs, cfg)
            q_joint = q.reshape(cfg, 1, n * t, -1)
            return q_joint, torch.cat(ks, dim=2), torch.cat(vs, dim=2)
        if state.first_from_anchors:
            # The anchors (appended below) take the first frame's place; "first" keeps the frame itself.
            ks, vs = ([], []) if state.mode == "first+prev" else ([k], [v])
        else:
            if self._first is None:
                raise RuntimeError("cross-frame attention: the first frame was not evaluated before later frames")
            first_k, first_v = self._first
            ks = [first_k[:, None].expand(cfg, n, t, c)]
            vs = [first_v[:, None].expand(cfg, n, t, c)]
        if state.mode == "first+prev":
            prev_k, prev_v = [], []
            for j, pos in enumerate(positions):
                want = max(pos - 1, 0)
                if want in positions:
                    jj = positions.index(want)
                    prev_k.append(k[:, jj])
                    prev_v.append(v[:, jj])
                elif want in self._last:
                    prev_k.append(self._last[want][0])
                    prev_v.append(self._last[want][1])
                else:
                    raise RuntimeError(f"cross-frame attention: previous frame {want} of frame {pos} is unavailable")
            ks += [torch.stack(prev_k, dim=1), k]
            vs += [torch.stack(prev_v, dim=1), v]
        self._last = {positions[j]: (k[:, j], v[:, j]) for j in range(max(0, n - max(1, state.keep_previous)), n)}
        ks, vs = self._with_reference(ks, vs, cfg, n)
        q = q.reshape(cfg * n, 1, t, -1)
        key_all = torch.cat(ks, dim=2).reshape(cfg * n, 1, -1, c)
        value_all = torch.cat(vs, dim=2).reshape(cfg * n, 1, -1, c)
        return q, key_all, value_all

    def _with_reference(self, ks, vs, cfg, n: int = 1):
        if self.state.use_reference and self._ref is not None:
            rk, rv = self._ref
            t, c = rk.shape[1], rk.shape[2]
            ks = ks + [rk[:, None].expand(cfg, n, t, c)]
            vs = vs + [rv[:, None].expand(cfg, n, t, c)]
        return ks, vs


class cross_frame_attention:  # noqa: N801 - used as a context manager, reads like one
    """Install cross-frame processors on every ``attn1`` of the given models; restore the originals on exit.

    ``with cross_frame_attention([pipe.unet, *controlnets], state): ...``
    """

    def __init__(self, models, state: CrossFrameState) -> None:
        self.models = [m for m in models if m is not None]
        self.state = state
        self._saved: list[dict] = []

    def __enter__(self) -> CrossFrameState:
        for model in self.models:
            original = dict(model.attn_processors)
            self._saved.append(original)
            new = {
                name: (CrossFrameAttnProcessor(self.state) if name.endswith("attn1.processor") else proc)
                for name, proc in original.items()
            }
            model.set_attn_processor(new)
        return self.state

    def __exit__(self, *exc) -> None:
        for model, original in zip(self.models, self._saved):
            model.set_attn_processor(original)
        self.state.processors.clear()
        self.state.batch = None
