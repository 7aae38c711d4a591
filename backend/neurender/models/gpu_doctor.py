"""The GPU section of ``neurender doctor``: the card, its free memory, torch's CUDA build, and the batch size a
typical render would get there (engine/vram.py), or, without a GPU, what the CPU would do instead."""

from __future__ import annotations

from typing import Any

from neurender.engine.vram import GiB, MemoryPlan, choose_batch_size, estimate_peak_bytes, free_memory_bytes

TYPICAL = dict(width=512, height=512, frames=16, consistency="first+prev")
"""The render the batch sizes are reported for: SD1.5 at 512x512, 16 frames, first+prev, one ControlNet."""


def _choices(free: int, dtype: str, fused: bool, gpu: bool = True) -> list[dict[str, Any]]:
    """Batch size and estimated peak for the typical render with no memory option, VAE slicing, and CPU offload
    (on a GPU only: on the CPU the models are in CPU memory anyway)."""
    out = []
    variants = [("default", {}), ("--vae-slicing", dict(vae_slicing=True))]
    if gpu:
        variants.append(("--vae-slicing --cpu-offload", dict(vae_slicing=True, cpu_offload=True)))
    for label, opts in variants:
        plan = MemoryPlan(**TYPICAL, dtype=dtype, fused_attention=fused, **opts)
        batch = choose_batch_size(free, plan)
        peak = estimate_peak_bytes(batch, plan)
        out.append({"options": label, "batch_size": batch, "estimated_peak_gib": round(peak / GiB, 2),
                    "fits": peak <= free})
    return out


def gpu_report(vram_budget_gib: float = 0.0) -> dict[str, Any]:
    """``devices`` (name, total/free GiB, compute capability), ``torch_cuda_build``, and ``plan``: the device, dtype
    and batch sizes a typical render would use here (``vram_budget_gib`` > 0 replaces the free memory)."""
    report: dict[str, Any] = {"torch": None, "torch_cuda_build": None, "cuda_available": False, "devices": [],
                              "plan": {}, "summary": ""}
    try:
        import torch
    except ImportError:
        report["summary"] = "torch is not installed"
        return report
    report["torch"] = torch.__version__
    report["torch_cuda_build"] = torch.version.cuda
    available = torch.cuda.is_available()
    report["cuda_available"] = bool(available)
    if available:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            report["devices"].append({
                "index": i, "name": torch.cuda.get_device_name(i), "total_gib": round(total / GiB, 2),
                "free_gib": round(free / GiB, 2), "capability": f"{props.major}.{props.minor}",
                "bf16": bool(props.major >= 8),
            })
    budget = int(vram_budget_gib * GiB) if vram_budget_gib > 0 else 0
    if report["devices"]:
        gpu = report["devices"][0]
        free = budget or int(gpu["free_gib"] * GiB)
        report["plan"] = {"device": "cuda:0", "dtype": "float16", "memory_gib": round(free / GiB, 2),
                          "memory_is": "budget" if budget else "free VRAM", **TYPICAL,
                          "choices": _choices(free, "float16", fused=True)}
        best = report["plan"]["choices"][0]
        report["summary"] = (f"{gpu['name']}: {gpu['free_gib']} of {gpu['total_gib']} GiB free; a 512x512 16-frame "
                             f"first+prev render in float16 would run {best['batch_size']} frames per model call")
        if not best["fits"]:
            report["summary"] += "; it may not fit: use --vae-slicing --cpu-offload"
    else:
        free = budget or free_memory_bytes("cpu")
        report["plan"] = {"device": "cpu", "dtype": "float32", "memory_gib": round(free / GiB, 2),
                          "memory_is": "budget" if budget else "available RAM", **TYPICAL,
                          "choices": _choices(free, "float32", fused=True, gpu=False)}
        why = ("torch is a CPU-only build" if torch.version.cuda is None
               else f"torch is built for CUDA {torch.version.cuda} but sees no GPU (driver? CUDA_VISIBLE_DEVICES?)")
        report["summary"] = (f"no CUDA GPU: {why}. On the CPU (float32, {round(free / GiB, 1)} GiB "
                             f"{report['plan']['memory_is']}) a 512x512 16-frame render would run "
                             f"{report['plan']['choices'][0]['batch_size']} frames per model call (SD1.5 measured ~5 min "
                             "per 512x512 frame at 20 steps on 2 CPU cores); device auto picks the CPU")
    return report


def print_gpu_report(report: dict[str, Any], write=print) -> None:
    write("GPU")
    write(f"  torch {report['torch']}, CUDA build: {report['torch_cuda_build'] or 'none (CPU-only torch)'}")
    for d in report["devices"]:
        write(f"  cuda:{d['index']} {d['name']}: {d['free_gib']} / {d['total_gib']} GiB free, compute "
              f"{d['capability']}{', bf16' if d['bf16'] else ''}")
    if not report["devices"]:
        write("  no CUDA GPU")
    plan = report.get("plan") or {}
    if plan:
        write(f"  batch size for {plan['width']}x{plan['height']}, {plan['frames']} frames, {plan['consistency']}, "
              f"{plan['dtype']} on {plan['device']} ({plan['memory_gib']} GiB {plan['memory_is']}):")
        for c in plan["choices"]:
            write(f"    {c['options']:<28} batch {c['batch_size']:>2}  est. peak {c['estimated_peak_gib']:.1f} GiB"
                  f"{'' if c['fits'] else '  (may not fit)'}")
    write(f"  {report['summary']}")
