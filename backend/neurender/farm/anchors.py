"""Shared anchors: the anchor frames' denoising trajectory, computed once per shot and read by every chunk.

Cross-frame attention makes frames draw their appearance from anchor frames (Text2Video-Zero's first frame,
Khachatryan et al. 2023, Sec. 3.3; Rerender-A-Video's first + previous frame, Yang et al. 2023, Sec. 4.1). When a
shot is cut into chunks rendered on different machines, each chunk's own first frame would be a different anchor and
the chunks would drift apart. So ``neurender anchors`` denoises a few anchor frames once, jointly (every anchor
attends to all anchors, as in DiffSynth-Studio's windows), and records their latents x_t at the input of every
step. A chunk then evaluates those saved latents at each step as a reference pass (``engine.sampler.AnchorFrames``)
and its frames attend to them instead of to the chunk's first frame: every chunk, on every node, sees bit-identical
anchors because they are read from one file, not recomputed.

The computation is the job plan's open -> load -> build -> run (``neurender.plan``); the folder it writes is
``farm/anchor_files.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from neurender.contract import RenderSettings
from neurender.errors import AnchorError
from neurender.farm.anchor_files import AnchorSet, anchors_ready, load_anchors, write_anchors

log = logging.getLogger(__name__)


def pick_anchor_frames(frames: Sequence[int], count: int) -> list[int]:
    """``count`` frames spread evenly over the shot, first and last included (the middle one for a single anchor)."""
    frames = sorted(frames)
    if count < 1:
        raise AnchorError(f"anchor count {count} must be at least 1")
    if count >= len(frames):
        return list(frames)
    if count == 1:
        return [frames[len(frames) // 2]]
    return sorted({frames[int(j * (len(frames) - 1) / (count - 1) + 0.5)] for j in range(count)})



def compute_anchors(
    pass_dir: Path | str,
    out_dir: Path | str,
    settings: RenderSettings,
    *,
    count: int = 3,
    frames: Optional[Sequence[int]] = None,
    pipelines=None,
    progress=None,
    cancel=None,
) -> AnchorSet:
    """Denoise the anchor frames of a shot once and save their trajectory to ``out_dir``.

    ``frames`` are explicit anchor frame numbers; otherwise ``count`` frames are spread over ``settings.frames`` (or
    the whole shot). A folder that already holds the same anchors is returned as is. ``progress(step, steps)``.
    """
    import torch

    from neurender import plan
    from neurender.models.cache import PipelineCache

    settings.check()
    if settings.consistency == "off":
        raise AnchorError("anchors need cross-frame attention, but consistency is off; choose first, first+prev or window")
    out = Path(out_dir)
    shot = plan.open_shot(settings, pass_dir)
    chosen = _anchor_frames(shot.frames, frames, count, pass_dir)
    if not settings.overwrite and anchors_ready(out, settings, chosen, pass_dir):
        log.info("anchors in %s are up to date (frames %s)", out, chosen)
        return load_anchors(out, settings)

    models = plan.load_models(settings, pipelines or PipelineCache())
    provide = plan.control_provider(shot, models, settings, chosen)
    controls = provide(range(len(chosen))) if provide is not None else []
    recorded: list[torch.Tensor] = []

    def record(ctx):  # the anchors' x_t at the input of every step
        recorded.append(ctx.latents.detach().to("cpu", torch.float32).clone())
        return None

    joint = plan.sampler_options(settings, len(models.kinds), consistency="window",  # joint attention over all anchors
                                 window_size=max(len(chosen), 2), window_stride=1)
    sampler = plan.build_sampler(
        settings, shot, models, num_frames=len(chosen),
        controls=(lambda positions: [c[list(positions)] for c in controls]) if provide is not None else None,
        options=joint, hooks=[record], on_step=progress,
        should_stop=cancel.raise_if_cancelled if cancel is not None else None,
    )
    final = sampler.run()
    write_anchors(out, settings, chosen, (shot.width, shot.height), models.kinds, torch.stack(recorded), controls,
                  sampler.decode(final), pass_dir)
    log.info("anchors of frames %s written to %s", chosen, out)
    return load_anchors(out, settings)


def _anchor_frames(shot_frames: list[int], frames: Optional[Sequence[int]], count: int, pass_dir) -> list[int]:
    """The explicit anchor ``frames`` (each must be a frame of the shot), else ``count`` spread over the shot."""
    if not frames:
        return pick_anchor_frames(shot_frames, count)
    missing = sorted(set(frames) - set(shot_frames))
    if missing:
        raise AnchorError(
            f"anchor frames {missing} are not frames of the pass folder {pass_dir} "
            f"(range {shot_frames[0]}-{shot_frames[-1]})"
        )
    return sorted(set(int(f) for f in frames))
