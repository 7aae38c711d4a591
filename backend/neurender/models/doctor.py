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


def inspect_model(path: str | Path, config_dir: str | Path | None = None) -> dict[str, Any]:
    """What ``path`` is and what render would do with it, by the checks render runs, short of loading weights.

    ``kind``: ``"diffusers-folder"``, ``"controlnet-folder"``, ``"model-folder"`` (another diffusers model),
    ``"single-file"`` (SD checkpoint), ``"controlnet-file"``, ``"lora-file"``, ``"embedding-file"``, ``"unknown"`` or
    ``"missing"``. ``ok`` is True when render would accept it in that role; ``render`` is one sentence: what render
    does with it, or (with ``error``) the very sentence render refuses it with. ``config_dir`` is render's config folder
    for single files (default: the SD1.5 one).
    """
    from neurender.models.checks import check_controlnet_path, check_sd_model, folder_kind
    from neurender.models.embeddings import EMBEDDING_SUFFIXES, read_embedding
    from neurender.models.lora import check_lora

    p = Path(path).expanduser()
    result: dict[str, Any] = {"path": str(p), "kind": "unknown", "ok": False, "error": None, "render": None}

    def refused(kind: str, exc: ModelLoadError) -> dict[str, Any]:
        result.update(kind=kind, ok=False, error=str(exc), render=str(exc))
        return result

    def accepted(kind: str, sentence: str) -> dict[str, Any]:
        result.update(kind=kind, ok=True, error=None, render=sentence)
        return result

    def judged(kind: str, check, sentence: str | None = None) -> dict[str, Any]:
        # render's own check decides; its refusal sentence (or its description, or ``sentence``) is the verdict
        try:
            description = check()
        except ModelLoadError as e:
            return refused(kind, e)
        return accepted(kind, sentence if sentence is not None else description)

    if not p.exists():
        return refused("missing", ModelLoadError(f"{p} does not exist"))
    if p.is_dir():
        try:
            folder = folder_kind(p)
        except ModelLoadError as e:
            return refused("unknown", e)
        if folder == "pipeline":
            return judged("diffusers-folder", lambda: check_sd_model(p, config_dir).describe())
        if folder == "controlnet":
            return judged("controlnet-folder", lambda: check_controlnet_path("controlnet", p),
                          f"render loads {p} as a ControlNet folder (its fit to the model is checked against the "
                          "model's UNet)")
        kind = "model-folder" if folder == "other-model" else "unknown"
        return refused(kind, ModelLoadError(f"{p} has neither model_index.json nor a ControlNet config.json"))
    try:
        info = read_checkpoint(p)
    except ModelLoadError as e:
        return refused("unknown", e)
    result["tensors"] = len(info.shapes)
    if info.kind == "lora":
        return judged("lora-file", lambda: check_lora(p), f"render applies {p} as a LoRA")
    if info.kind == "controlnet":
        return judged("controlnet-file", lambda: check_controlnet_path("controlnet", p),
                      f"render loads {p} as an SD1.x ControlNet file (its fit to the model is checked against the "
                      "model's UNet)")
    if info.kind == "sd-checkpoint":
        return judged("single-file", lambda: check_sd_model(p, config_dir).describe())
    if p.suffix.lower() in EMBEDDING_SUFFIXES:
        try:
            vectors = read_embedding(p)
        except ModelLoadError as e:
            return refused("unknown", e)
        return accepted("embedding-file", f"render adds {p} as the textual-inversion word '{p.stem}' "
                                          f"({vectors.shape[0]} vectors of width {vectors.shape[1]})")
    return refused("unknown", ModelLoadError(
        f"{p} holds neither an SD checkpoint, a ControlNet, a LoRA nor a textual-inversion embedding"))
