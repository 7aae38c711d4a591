"""Turn the user's device and dtype strings into torch objects, refusing what this machine cannot do."""

from __future__ import annotations

from typing import Any

from neurender.errors import InputError

DTYPES = ("float32", "float16", "bfloat16")
DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_dtype(dtype: str) -> Any:
    """``"float32"|"float16"|"bfloat16"`` -> ``torch.dtype``."""
    import torch

    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def resolve_device(device: str) -> Any:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"`` -> ``torch.device``, if available here."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as e:
        raise InputError(f"device {device!r} is not one of {', '.join(DEVICE_TYPES)} (e.g. 'cuda:0')") from e
    if dev.type not in DEVICE_TYPES:
        raise InputError(f"device {device!r} is not one of {', '.join(DEVICE_TYPES)}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"device {device!r} was requested but torch {torch.__version__} sees no CUDA GPU here; "
                "use device 'cpu' or install a CUDA build of torch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are present")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(f"device {device!r} was requested but Apple MPS is not available here; use device 'cpu'")
    return dev


def pick_device(device: str) -> str:
    """``"auto"`` -> the best device of this machine (``cuda``, else ``mps``, else ``cpu``); anything else as given."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str) -> str:
    """``"auto"`` -> ``float16`` on a GPU (``cuda``/``mps``), ``float32`` on the CPU; anything else as given."""
    if dtype != "auto":
        return dtype
    return "float32" if device.split(":")[0] == "cpu" else "float16"
