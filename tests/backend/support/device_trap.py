"""A stand-in accelerator on the CPU that catches tensors left on the wrong device, without a GPU.

A CPU-only torch cannot stand in for CUDA itself (``x.to("cuda")`` and indexing build a CUDA device guard and fail
before any dispatch), so the stand-in is the ``meta`` device, which exists in every build. Tensors "on the
accelerator" are ``AcceleratorTensor`` wrappers (``torch.Tensor._make_wrapper_subclass`` with ``device=meta``) around
ordinary CPU tensors holding the real values: the engine computes exactly what it computes on the CPU while every
tensor derived from the model reports ``device.type == "meta"``, refuses ``.numpy()`` as a CUDA tensor does, and so
on. ``DeviceTrap`` is a ``TorchDispatchMode`` that sees every aten call:

- a factory call with ``device=<accelerator>`` (``torch.zeros(..., device=latents.device)``) runs on the CPU and is
  wrapped; ``.to(device)`` wraps, ``.cpu()`` / ``.to("cpu")`` unwraps;
- a call that mixes an accelerator tensor with a CPU tensor of more than zero dimensions is a fault: real CUDA
  raises "Expected all tensors to be on the same device" there (cross-device ``copy_``, ``.to`` and CPU index
  tensors are allowed, as on CUDA; 0-dim CPU tensors act as scalars, as on CUDA); so is a CPU ``torch.Generator``
  drawing accelerator noise directly (CUDA wants a CUDA generator) and a CPU tensor indexed by accelerator indices;
- each fault names the innermost ``neurender`` source line, so a test can say where the stray tensor was used.

A tensor made without ``device=`` (CPU by default), a ``torch.from_numpy`` result, or a checkpoint restored with
``map_location="cpu"`` that meets the model's tensors without a ``.to(device)`` is caught that way. Faults are
recorded and the computation goes on with the CPU values, so one run lists every fault; ``strict=True`` raises at
the first. Scaled-dot-product attention is answered with its math backend (no fused kernels for this device).
"""

from __future__ import annotations

import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

ACCELERATOR = torch.device("meta")
aten = torch.ops.aten

# ops that take operands on another device on real CUDA: copies, and CPU index tensors
_CROSS_DEVICE_OK = {
    aten.copy_.default,
    aten._to_copy.default,
    aten._copy_from.default,
    aten._copy_from_and_resize.default,
    aten.index.Tensor,
    aten.index_put_.default,
    aten.index_put.default,
    aten._index_put_impl_.default,
}


_INDEX_PUT = {aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default}


class AcceleratorTensor(torch.Tensor):
    """An accelerator tensor whose values live in ``elem`` (a CPU tensor)."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor, requires_grad=None, **_):
        # ``AcceleratorTensor(value, requires_grad=...)``: how accelerate re-creates a parameter of this class
        if isinstance(elem, AcceleratorTensor):
            elem = elem.elem
        if requires_grad is not None:
            r = AcceleratorTensor(elem)
            r._is_param = True
            return r
        r = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(), dtype=elem.dtype,
            device=ACCELERATOR, requires_grad=elem.requires_grad,
        )
        r.elem = elem
        return r

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __repr__(self) -> str:
        return f"AcceleratorTensor({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} on an AcceleratorTensor outside DeviceTrap")


@dataclass(frozen=True)
class Fault:
    op: str
    message: str
    where: str

    def __str__(self) -> str:
        return f"{self.where}: {self.op}: {self.message}"


def _where() -> str:
    """The innermost neurender source line of the current stack (else the innermost line outside torch)."""
    frames = [f for f in traceback.extract_stack() if not f.filename.endswith("device_trap.py")]
    norm = [(f, f.filename.replace("\\", "/")) for f in frames]
    ours = [f for f, name in norm if "/neurender/" in name and "/tests/" not in name]
    pick = ours[-1] if ours else next((f for f, name in reversed(norm) if "/torch/" not in name), frames[-1])
    name = pick.filename.replace("\\", "/")
    if "/neurender/" in name:
        name = name[name.rfind("/neurender/") + 1 :]
    return f"{name}:{pick.lineno} `{pick.line}`"


def _on_accelerator(device) -> bool:
    return device is not None and torch.device(device).type == ACCELERATOR.type


def _unwrap(t):
    return t.elem if isinstance(t, AcceleratorTensor) else t


class DeviceTrap(TorchDispatchMode):
    def __init__(self, strict: bool = False) -> None:
        super().__init__()
        self.strict = strict
        self.faults: list[Fault] = []
        self.modules: set[str] = set()
        """The neurender modules (``engine/sampler.py``, ...) on the stack of a call with accelerator tensors: what
        the audit really ran on the device."""

    def _note_modules(self) -> None:
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename.replace("\\", "/")
            at = name.rfind("/neurender/")
            if at >= 0 and "/tests/" not in name:
                self.modules.add(name[at + len("/neurender/") :])
            frame = frame.f_back

    def _fault(self, func, message: str) -> None:
        fault = Fault(str(func), message, _where())
        if self.strict:
            raise RuntimeError(str(fault))
        if fault not in self.faults:
            self.faults.append(fault)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is aten._fused_sdp_choice.default:
            return 0  # SDPBackend.math: composed of ordinary ops, which run on the unwrapped CPU tensors
        flat, _ = tree_flatten((args, kwargs))
        acc = [t for t in flat if isinstance(t, AcceleratorTensor)]
        cpu = [t for t in flat if isinstance(t, torch.Tensor) and not isinstance(t, AcceleratorTensor)]
        if any(t.device.type == ACCELERATOR.type for t in cpu):
            # torch made a tensor on the stand-in device with Python dispatch switched off: it holds no values
            raise RuntimeError(f"device_trap: a value-less {ACCELERATOR.type} tensor reached {func} at {_where()}")
        to_acc = _on_accelerator(kwargs.get("device"))
        to_cpu = kwargs.get("device") is not None and not to_acc
        if to_acc:
            kwargs["device"] = torch.device("cpu")
            gen = kwargs.get("generator")
            if gen is not None and gen.device.type == "cpu":
                self._fault(func, "a CPU torch.Generator draws an accelerator tensor (CUDA wants a CUDA generator)")
        if acc:
            self._note_modules()
        if acc and func not in _CROSS_DEVICE_OK:
            stray = [t for t in cpu if t.dim() > 0]
            if stray:
                shapes = ", ".join(f"cpu {tuple(t.shape)} {t.dtype}" for t in stray)
                self._fault(func, f"mixes accelerator tensors with {shapes} (CUDA raises: different devices)")
        if func is aten.index.Tensor and acc and not isinstance(args[0], AcceleratorTensor):
            self._fault(func, "indexes a CPU tensor with accelerator indices")
        if func in _INDEX_PUT and isinstance(args[0], AcceleratorTensor) and len(args) > 2:
            values = args[2]
            if isinstance(values, torch.Tensor) and not isinstance(values, AcceleratorTensor) and values.dim() > 0:
                self._fault(func, f"writes cpu values {tuple(values.shape)} into an accelerator tensor by index")
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        if not (to_acc or (acc and not to_cpu)):
            return out
        schema = func._schema  # in-place and out= calls return their own (already wrapped) argument
        written = [r.alias_info is not None and r.alias_info.is_write for r in schema.returns]
        if schema.returns and all(written):
            mutated = [a for a, arg in zip(args, schema.arguments)
                       if arg.alias_info is not None and arg.alias_info.is_write]
            mutated += [kwargs[arg.name] for arg in schema.arguments
                        if arg.alias_info is not None and arg.alias_info.is_write and arg.name in kwargs]
            if len(mutated) == len(schema.returns):
                return mutated[0] if len(mutated) == 1 else tuple(mutated)
        return tree_map(lambda t: AcceleratorTensor(t) if type(t) is torch.Tensor else t, out)


def _cpu_indices(index):
    """Python lists in an index -> CPU index tensors (what torch makes of them for a CPU tensor)."""
    if isinstance(index, tuple):
        return tuple(_cpu_indices(i) for i in index)
    if isinstance(index, list):
        return torch.tensor(index, device="cpu")
    return index


class _DataOnCpuFirst(TorchFunctionMode):
    """Tensors built from Python data are made on the CPU and then moved with ``.to``.

    torch builds them (``torch.tensor(data, device=...)``, list indices) with Python dispatch switched off, so on the
    stand-in device they would come out as real meta tensors without values."""

    _FROM_DATA = (torch.tensor, torch.as_tensor, torch.asarray)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.numpy and isinstance(args[0], AcceleratorTensor):
            raise TypeError("can't convert an accelerator tensor to numpy (as for cuda:0): use Tensor.cpu() first")
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and isinstance(args[0], AcceleratorTensor):
            args = (args[0], _cpu_indices(args[1]), *args[2:])
        elif func in self._FROM_DATA and _on_accelerator(kwargs.get("device")):
            kwargs["device"] = "cpu"
            return func(*args, **kwargs).to(ACCELERATOR)
        elif func is torch.Tensor.new_tensor and isinstance(args[0], AcceleratorTensor) and (
            kwargs.get("device") is None or _on_accelerator(kwargs.get("device"))
        ):
            kwargs["device"] = "cpu"
            return func(*args, **kwargs).to(ACCELERATOR)
        return func(*args, **kwargs)


def to_accelerator(module):
    """Move a module's (or a diffusers pipeline's) parameters and buffers onto the stand-in accelerator."""
    modules = [module] if isinstance(module, torch.nn.Module) else [
        m for m in getattr(module, "components", {}).values() if isinstance(m, torch.nn.Module)]
    previous = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)  # keep the subclass (no ``param.data = ...``)
    try:
        for m in modules:
            m.to(ACCELERATOR)
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(previous)
    return module


@contextmanager
def device_trap(strict: bool = False):
    """The trap for the block; modules moved with ``.to`` inside it keep wrapper parameters (e.g. a CPU offload)."""
    trap = DeviceTrap(strict=strict)
    previous = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        with _DataOnCpuFirst(), trap:
            yield trap
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(previous)
