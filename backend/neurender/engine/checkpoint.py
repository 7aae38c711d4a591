"""Durable denoising state, so a killed job resumes at the step it reached instead of starting over.

After each step the sampler may save: the step index, the latents of every frame, the scheduler's mutable state and
the noise generators' states, plus a fingerprint of everything that decides the result. The file is written
atomically (temporary file + ``os.replace``) and loaded with ``torch.load(weights_only=True)``: plain tensors and
numbers only, never a pickle of arbitrary objects.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from neurender.frames import write_bytes_atomic

log = logging.getLogger(__name__)

_SKIP = {"config", "_internal_dict"}


def _pack(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {"__t": value.detach().cpu()}
    if isinstance(value, np.ndarray):
        return {"__np": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, (list, tuple)):
        return {"__l": [_pack(v) for v in value], "__tuple": isinstance(value, tuple)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"__v": value}
    raise TypeError(type(value).__name__)


def _unpack(value: Any, device) -> Any:
    if "__t" in value:
        return value["__t"].to(device)
    if "__np" in value:
        return value["__np"].numpy()
    if "__l" in value:
        items = [_unpack(v, device) for v in value["__l"]]
        return tuple(items) if value["__tuple"] else items
    return value["__v"]


def scheduler_state(scheduler) -> dict[str, Any]:
    state = {}
    for name, value in vars(scheduler).items():
        if name in _SKIP:
            continue
        try:
            state[name] = _pack(value)
        except TypeError:
            continue  # not mutable sampling state (modules, callables): rebuilt from the config
    return state


def restore_scheduler(scheduler, state: dict[str, Any], device) -> None:
    for name, value in state.items():
        tensor_on_device = name not in ("sigmas",)  # diffusers keeps sigmas on CPU by default
        setattr(scheduler, name, _unpack(value, device if tensor_on_device else "cpu"))


def _gen_states(generators) -> list[torch.Tensor]:
    gens = generators if isinstance(generators, list) else [generators]
    return [g.get_state() for g in gens]


def save_checkpoint(path: Path, *, fingerprint: str, step: int, latents: torch.Tensor, scheduler, generators) -> None:
    payload = {
        "fingerprint": fingerprint,
        "step": step,
        "latents": latents.detach().cpu(),
        "scheduler": scheduler_state(scheduler),
        "generators": _gen_states(generators),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path, fingerprint: str) -> Optional[dict[str, Any]]:
    """The saved state if it exists, is readable and belongs to the same settings; else None."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: start over rather than fail the job
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
    if payload.get("fingerprint") != fingerprint:
        log.info("checkpoint %s belongs to other settings; starting over", path)
        return None
    return payload


def restore_generators(generators, states: list[torch.Tensor]) -> None:
    gens = generators if isinstance(generators, list) else [generators]
    if len(gens) != len(states):
        raise ValueError("generator count changed")
    for g, s in zip(gens, states):
        g.set_state(s)
