"""TokenFlow self-attention: joint attention over the keyframes, propagation of their outputs to the other frames.

TokenFlow (Geyer et al. 2023, arXiv 2307.10373) per denoising step:

1. keyframes (``KeyframeContext.phase == "keyframes"``): every keyframe's queries attend to the keys/values of *all*
   keyframes ("extended attention", Sec. 4.1, eq. 3); each ``attn1`` layer records the keyframes' outputs;
2. other frames (``phase == "propagate"``): the layer's output for frame f is the keyframe outputs carried along
   correspondences, blended between the nearest keyframe before and after f with weights that fall linearly with
   distance (eq. 6 with linear instead of sigmoid weights): ``out_f = sum_k w_k v_k T_k(O_k) / sum_k w_k v_k``,
   where ``T_k`` moves keyframe tokens onto f's grid and ``v_k`` is their validity. Where no keyframe sees a token
   (occlusion; coverage ``c = max_k v_k < 1``) the frame's own self-attention output fills in:
   ``c * out_f + (1 - c) * own_f``.

Optional Plug-and-Play (Tumanyan et al. 2023, arXiv 2211.12572, Sec. 4): during a *source* pass the decoder layers
flagged ``inject_qk`` record their queries and keys; in the following target pass they use them instead of their own
(``KeyframeContext.pnp_mode``: ``record`` / ``inject``; see ``pnp.py``).

The projections, norms, SDPA call and output projection mirror diffusers' ``AttnProcessor2_0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from neurender.engine.attention import CrossFrameState, attention_input, attention_residual, output_projection
from neurender.engine.memory import sdpa
from neurender.engine.tokenflow_correspondence import Correspondences, carry, token_grid


@dataclass
class KeyframeContext:
    """Shared by all keyframe processors of one run (the sampler's ``CrossFrameState`` says which frames run now)."""

    cross: CrossFrameState
    latent_size: tuple[int, int]
    correspondences: Optional[Correspondences] = None
    phase: str = "off"  # off | keyframes | propagate | plain
    keyframes: list[int] = field(default_factory=list)
    neighbours: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    pnp_mode: Optional[str] = None  # None | record | inject
    processors: list["KeyframeAttnProcessor"] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=lambda: {"carried": 0, "own": 0})


def _sdpa(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, Tq, inner), (B, Tk, inner) -> (B, Tq, out) through heads, SDPA and the output projection."""
    b, tq, inner = q.shape
    d = inner // attn.heads
    q = q.reshape(b, tq, attn.heads, d).transpose(1, 2)
    k = k.reshape(b, k.shape[1], attn.heads, d).transpose(1, 2)
    v = v.reshape(b, v.shape[1], attn.heads, d).transpose(1, 2)
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    out = sdpa(q, k, v)
    out = out.transpose(1, 2).reshape(b, tq, attn.heads * d).to(q.dtype)
    return output_projection(attn, out)


class KeyframeAttnProcessor:
    """Self-attention processor for keyframe mode (see module docstring); other calls are plain attention."""

    def __init__(self, ctx: KeyframeContext, name: str = "", inject_qk: bool = False) -> None:
        self.ctx = ctx
        self.name = name
        self.inject_qk = inject_qk
        self.outputs: Optional[torch.Tensor] = None  # (cfg, K, T, C) keyframe outputs of this step
        self.inputs: Optional[torch.Tensor] = None  # (K, T, C) keyframe attention inputs (feature correspondences)
        self.ref: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # reference keys/values (cfg, Tr, C)
        self.source_qk: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # PnP: (n, T, C) queries, keys
        self._step = -1
        ctx.processors.append(self)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        ctx = self.ctx
        if ctx.cross.step != self._step:
            self._step = ctx.cross.step
            self.outputs = self.inputs = self.ref = None
        residual = hidden_states
        hidden_states, spatial = attention_input(attn, hidden_states, temb)
        batch = ctx.cross.batch
        special = (
            encoder_hidden_states is None and attention_mask is None and batch is not None and ctx.phase != "off"
            and batch.cfg * len(batch.positions) == hidden_states.shape[0]
        )
        if not special:
            out = self._plain(attn, hidden_states, encoder_hidden_states, attention_mask)
        elif batch.is_reference:
            out = self._reference(attn, hidden_states, batch.cfg)
        elif ctx.phase == "keyframes":
            out = self._joint(attn, hidden_states, batch.cfg, len(batch.positions))
        elif ctx.phase == "propagate":
            out = self._propagate(attn, hidden_states, batch.cfg, batch.positions)
        else:
            out = self._own(attn, hidden_states, batch.cfg, len(batch.positions))
        return attention_residual(attn, out, residual, spatial)

    # ---------------------------------------------------------------------------------------------------------
    def _plain(self, attn, x, encoder_hidden_states, attention_mask):
        q = attn.to_q(x)
        if encoder_hidden_states is None:
            source = x
        elif attn.norm_cross:
            source = attn.norm_encoder_hidden_states(encoder_hidden_states)
        else:
            source = encoder_hidden_states
        k, v = attn.to_k(source), attn.to_v(source)
        if attention_mask is None:
            return _sdpa(attn, q, k, v)
        b, tq, inner = q.shape
        d = inner // attn.heads
        mask = attn.prepare_attention_mask(attention_mask, k.shape[1], b).view(b, attn.heads, -1, k.shape[1])
        qh = q.reshape(b, tq, attn.heads, d).transpose(1, 2)
        kh = k.reshape(b, -1, attn.heads, d).transpose(1, 2)
        vh = v.reshape(b, -1, attn.heads, d).transpose(1, 2)
        out = sdpa(qh, kh, vh, attn_mask=mask).transpose(1, 2).reshape(b, tq, inner)
        return output_projection(attn, out.to(q.dtype))

    def _qk(self, attn, x: torch.Tensor, cfg: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys, recorded from or replaced by the PnP source branch on flagged decoder layers."""
        q, k = attn.to_q(x), attn.to_k(x)
        mode = self.ctx.pnp_mode if self.inject_qk else None
        if mode == "record":
            self.source_qk = (q.detach(), k.detach())
        elif mode == "inject" and self.source_qk is not None and self.source_qk[0].shape[0] * cfg == q.shape[0]:
            q = self.source_qk[0].repeat(cfg, 1, 1)
            k = self.source_qk[1].repeat(cfg, 1, 1)
        return q, k

    def _own(self, attn, x, cfg: int, n: int) -> torch.Tensor:
        q, k = self._qk(attn, x, cfg)
        return _sdpa(attn, q, k, attn.to_v(x))

    def _reference(self, attn, x, cfg: int) -> torch.Tensor:
        """A reference pass: plain attention; its keys/values become extra anchors for the keyframes."""
        k, v = attn.to_k(x), attn.to_v(x)
        rk, rv = k.reshape(cfg, -1, k.shape[-1]), v.reshape(cfg, -1, v.shape[-1])
        if self.ref is not None:
            rk, rv = torch.cat([self.ref[0], rk], 1), torch.cat([self.ref[1], rv], 1)
        self.ref = (rk, rv)
        return _sdpa(attn, attn.to_q(x), k, v)

    def _joint(self, attn, x, cfg: int, n: int) -> torch.Tensor:
        """Extended attention: each keyframe attends to the tokens of all keyframes (and the reference, if any)."""
        t = x.shape[1]
        q, k = self._qk(attn, x, cfg)
        v = attn.to_v(x)
        c = k.shape[-1]
        ks, vs = [k.reshape(cfg, n * t, c)], [v.reshape(cfg, n * t, c)]
        if self.ref is not None:
            ks.append(self.ref[0])
            vs.append(self.ref[1])
        out = _sdpa(attn, q.reshape(cfg, n * t, -1), torch.cat(ks, 1), torch.cat(vs, 1))
        out = out.reshape(cfg * n, t, -1)
        if self.ctx.pnp_mode != "record":
            self.outputs = out.reshape(cfg, n, t, -1).detach()
            corr = self.ctx.correspondences
            if corr is not None and getattr(corr, "needs_features", False):
                self.inputs = x.reshape(cfg, n, t, -1)[-1].detach()
        return out

    def _propagate(self, attn, x, cfg: int, positions: list[int]) -> torch.Tensor:
        ctx = self.ctx
        n, t = len(positions), x.shape[1]
        if self.outputs is None:
            raise RuntimeError("keyframe attention: the keyframes were not evaluated before the other frames")
        h, w = token_grid(t, *ctx.latent_size)
        xs = x.reshape(cfg, n, t, -1)
        carried, cover = [], []
        for j, pos in enumerate(positions):
            num = torch.zeros(cfg, t, self.outputs.shape[-1], dtype=torch.float32, device=x.device)
            total = torch.zeros(t, dtype=torch.float32, device=x.device)
            seen = torch.zeros(t, dtype=torch.float32, device=x.device)
            for key, weight in ctx.neighbours[pos]:
                idx = ctx.keyframes.index(key)
                if ctx.correspondences is None:  # no correspondences at all: keyframe tokens as they are
                    tokens, valid = self.outputs[:, idx], torch.ones(t, device=x.device)
                else:
                    def features(jj=j, ii=idx):
                        return xs[-1, jj], self.inputs[ii]

                    tmap = ctx.correspondences.token_map(pos, key, h, w, features=features)
                    tokens, valid = carry(self.outputs[:, idx], tmap, h, w), tmap.valid.to(x.device).float()
                a = weight * valid
                num += a[None, :, None] * tokens.float()
                total += a
                seen = torch.maximum(seen, valid)
            carried.append(num / total.clamp_min(1e-12)[None, :, None])
            cover.append(seen)
        out = torch.stack(carried, 1)  # (cfg, n, t, C)
        cov = torch.stack(cover, 0)  # (n, t)
        need = [j for j in range(n) if bool((cov[j] < 1).any())]
        ctx.stats["carried"] += n - len(need)
        if need:
            ctx.stats["own"] += len(need)
            sel = xs[:, need].reshape(cfg * len(need), t, -1)
            own = self._own(attn, sel, cfg, len(need)).reshape(cfg, len(need), t, -1).float()
            c = cov[need][None, :, :, None]
            out[:, need] = c * out[:, need] + (1 - c) * own
        return out.to(x.dtype).reshape(cfg * n, t, -1)


class keyframe_attention:  # noqa: N801 - a context manager
    """Install ``KeyframeAttnProcessor`` on every ``attn1`` of the models; restore the originals on exit.

    Decoder (``up_blocks``) layers of the first model (the UNet) are flagged for PnP query/key injection.
    """

    def __init__(self, models, ctx: KeyframeContext) -> None:
        self.models = [m for m in models if m is not None]
        self.ctx = ctx
        self._saved: list[dict] = []

    def __enter__(self) -> KeyframeContext:
        for m, model in enumerate(self.models):
            original = dict(model.attn_processors)
            self._saved.append(original)
            new = {}
            for name, proc in original.items():
                if name.endswith("attn1.processor"):
                    proc = KeyframeAttnProcessor(self.ctx, name, inject_qk=m == 0 and name.startswith("up_blocks"))
                new[name] = proc
            model.set_attn_processor(new)
        return self.ctx

    def __exit__(self, *exc) -> None:
        for model, original in zip(self.models, self._saved):
            model.set_attn_processor(original)
        self.ctx.processors.clear()
        self.ctx.cross.batch = None
