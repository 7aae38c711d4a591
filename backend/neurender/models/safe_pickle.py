"""Weights-only loading of the pickled checkpoints artists download (``.ckpt``/``.pt``/``.pth``), and why one is refused.

A pickle can name any Python callable and have it run on load, so ``torch.load(weights_only=True)`` accepts only
tensors, containers and an allow-list of globals. The official SD1.x checkpoints (``v1-5-pruned-emaonly.ckpt``,
``sd-v1-4.ckpt``) were written by the CompVis training code with PyTorch Lightning 1.4 and numpy 1.2x (2022): next to
``state_dict`` their top level holds ``callbacks`` keyed by the ``pytorch_lightning...ModelCheckpoint`` class and
numpy scalars such as ``global_step``. Those globals are allow-listed here, and only those: an inert stand-in class
under the Lightning names (nothing of Lightning is imported or run), numpy's scalar constructor under its 2022 name
``numpy.core.multiarray.scalar`` (numpy 2 moved it to ``numpy._core``) and the numpy dtype classes. The allow-list is
process-wide (``torch.serialization.add_safe_globals``) because diffusers' ``from_single_file`` loads the file again
with ``weights_only=True`` itself. Everything else is still refused, and the refusal says what the file asked for:
a code-running global (``posix.system``, ``builtins.eval``, ...) is reported as probably malicious, another unknown
class as a file that is not plain weights. The globals are listed with
``torch.serialization.get_unsafe_globals_in_checkpoint``, which reads the pickle's opcodes without executing them.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

from neurender.errors import ModelLoadError

log = logging.getLogger(__name__)

LIGHTNING_CALLBACK_NAMES = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
)
# Module roots whose globals exist to run code, touch files or the network: never in a weights file.
_DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "builtins", "__builtin__", "socket", "shutil", "runpy", "importlib",
    "pty", "webbrowser", "pickle", "_pickle", "marshal", "ctypes", "code", "codeop", "commands", "platform",
    "requests", "urllib", "http", "ftplib", "smtplib", "telnetlib", "asyncio", "multiprocessing", "threading",
    "signal", "tempfile", "pathlib", "io", "_io", "operator", "functools", "types", "inspect", "pdb", "timeit",
    "trace", "cProfile", "profile", "zipimport", "pip", "setuptools", "distutils", "torch.hub", "torch._C",
})
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_UNSUPPORTED = re.compile(r"unsupported global:?\s+(?:GLOBAL\s+)?([\w.]+)", re.IGNORECASE)

_lock = threading.Lock()
_installed = False


class LightningCallbackStandIn:
    """Inert stand-in for a PyTorch Lightning callback in a training checkpoint: keeps its state as plain attributes.

    Defines no ``__setstate__``/``__reduce__``: unpickling can only fill ``__dict__`` with already-allowed values.
    """

    def __repr__(self) -> str:
        return f"<lightning callback stand-in {sorted(vars(self))}>"


def official_checkpoint_globals() -> list[Any]:
    """The ``add_safe_globals`` entries: (object, name in the file) for renamed globals, plain objects otherwise."""
    import numpy as np

    entries: list[Any] = [(LightningCallbackStandIn, name) for name in LIGHTNING_CALLBACK_NAMES]
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    entries += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:  # numpy >= 1.25 pickles a dtype by its class
        for name in dir(dtypes):
            cls = getattr(dtypes, name)
            if name.endswith("DType") and isinstance(cls, type) and name not in ("ObjectDType", "VoidDType"):
                entries.append((cls, f"numpy.dtypes.{name}"))
    return entries


def allowed_names() -> set[str]:
    """Fully qualified names of the globals :func:`install` allows (as they appear in a file)."""
    names = set()
    for entry in official_checkpoint_globals():
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f"{entry.__module__}.{entry.__qualname__}")
    return names


def install() -> None:
    """Allow the official-checkpoint globals in every weights-only ``torch.load`` of this process (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        import torch

        torch.serialization.add_safe_globals(official_checkpoint_globals())
        _installed = True


def clean_text(text: str) -> str:
    """A library message without ANSI escapes and without torch's advice to load with ``weights_only=False``."""
    kept = []
    for line in _ANSI.sub("", text).splitlines():
        for sentence in re.split(r"(?<=[.!?])\s+", line.strip()):
            low = sentence.lower()
            if not sentence or "weights_only" in low or "trust the source" in low or "add_safe_globals" in low:
                continue
            if "check the documentation of torch.load" in low or "two options" in low or low.startswith("(2) alt"):
                continue
            kept.append(sentence)
    return " ".join(kept)


def _module_root(name: str) -> str:
    return name.split(".", 1)[0]


def _is_dangerous(name: str) -> bool:
    module = name.rsplit(".", 1)[0]
    return module in _DANGEROUS_MODULES or _module_root(name) in _DANGEROUS_MODULES


def refused_globals(path: Path, exc: BaseException | None = None) -> list[str]:
    """Globals in the file that the weights-only loader does not allow (read from the opcodes, never executed)."""
    import torch

    found: list[str] = []
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - legacy (non-zip) format or unreadable archive
        found = []
    if not found and exc is not None:
        found = _UNSUPPORTED.findall(_ANSI.sub("", str(exc)))
        found += re.findall(r"unsupported GLOBAL ([\w.]+)", str(exc))
    allowed = allowed_names()
    out: list[str] = []
    for name in found:
        if name not in allowed and name not in out:
            out.append(name)
    return out


def refusal_message(path: Path, exc: BaseException) -> str:
    """One sentence for a pickle that weights-only loading refused: malware, an unknown class, or a broken file."""
    names = refused_globals(path, exc)
    dangerous = [n for n in names if _is_dangerous(n)]
    if dangerous:
        return (
            f"{path} was refused and not opened: it would run {', '.join(dangerous)} when loaded, which no model file "
            "needs - it is probably malicious; delete it and do not open it with other tools either"
        )
    if names:
        return (
            f"{path} was refused: besides weights it holds Python objects of {', '.join(names)}, which neurender does "
            "not load from a pickle (only tensors, the official SD checkpoints' Lightning callback and numpy scalars); "
            "use the .safetensors version of this model"
        )
    cause = clean_text(str(exc)) or type(exc).__name__
    return f"{path} is not a readable PyTorch checkpoint (truncated or corrupt download?): {cause}"


def load(path: Path) -> Any:
    """``torch.load`` a pickled checkpoint weights-only (memory-mapped when possible); ``ModelLoadError`` if refused."""
    import torch

    install()
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means an unreadable or refused file
        raise ModelLoadError(refusal_message(path, e)) from e
