"""Diagnostics for ``neurender doctor`` and bug reports: what this machine can run, and what a model path holds."""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

from neurender.errors import ModelLoadError
from neurender.models.checkpoint_files import read_checkpoint


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - not installed or broken metadata
        return None


def environment_report() -> dict[str, Any]:
    """Versions (python, torch, diffusers, transformers, peft, safetensors), CUDA devices and MPS availability."""
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": _version("torch"),
        "diffusers": _version("diffusers"),
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "safetensors": _version("safetensors"),
        "cuda_available": False,
        "cuda_version": None,
        "cuda_devices": [],
        "mps_available": False,
        "cpu_threads": None,
    }
    try:
        import torch
    except ImportError:
        return report
    report["cpu_threads"] = torch.get_num_threads()
    report["cuda_version"] = torch.version.cuda
    if torch.cuda.is_available():
        report["cuda_available"] = True
        report["cuda_devices"] = [
            {
                "index": i,
                "name": torch.cuda.get_device_name(i),
                "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
            }
            for i in range(torch.cuda.device_count())
        ]
    mps = getattr(torch.backends, "mps", None)
    report["mps_available"] = bool(mps is not None and mps.is_available())
    return report


def inspect_model(path: str | Path) -> dict[str, Any]:
    """What ``path`` is, without loading weights.

    ``kind``: ``"diffusers-folder"``, ``"controlnet-folder"``, ``"model-folder"`` (another diffusers model),
    ``"single-file"`` (SD checkpoint), ``"controlnet-file"``, ``"lora-file"``, ``"unknown"`` or ``"missing"``.
    ``ok`` is True when neurender can use it as some kind of model; ``error`` says why not.
    """
    from neurender.models.loading import _folder_kind  # the loader's own folder rules

    p = Path(path).expanduser()
    result: dict[str, Any] = {"path": str(p), "kind": "unknown", "ok": False, "error": None}
    if not p.exists():
        result.update(kind="missing", error=f"{p} does not exist")
        return result
    try:
        if p.is_dir():
            folder = _folder_kind(p)
            kind = {"pipeline": "diffusers-folder", "controlnet": "controlnet-folder", "other-model": "model-folder"}
            result["kind"] = kind.get(folder, "unknown")
            result["ok"] = folder in ("pipeline", "controlnet")
            if not result["ok"]:
                result["error"] = f"{p} has neither model_index.json nor a ControlNet config.json"
            return result
        info = read_checkpoint(p)
    except ModelLoadError as e:
        result["error"] = str(e)
        return result
    result["tensors"] = len(info.shapes)
    result["kind"] = {
        "sd-checkpoint": "single-file",
        "controlnet": "controlnet-file",
        "lora": "lora-file",
    }.get(info.kind, "unknown")
    result["ok"] = info.kind != "unknown"
    if not result["ok"]:
        result["error"] = f"{p} holds neither an SD checkpoint, a ControlNet nor a LoRA"
    return result
