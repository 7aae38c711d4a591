"""How many frames per model call fit in the memory there is: ``--vram-budget`` and ``--batch-size 0`` (auto).

``choose_batch_size`` is a pure function of the free bytes, the resolution, the shot length, the consistency mode
and the memory options: the largest batch whose estimated peak (``estimate_peak_bytes``) stays within
``SAFETY`` of the budget, at least 1 and at most the number of frames (``window`` mode evaluates whole windows, so
its batch is the window size: the function then only tells whether that fits).

The estimate is a model of SD1.5's memory, not a measurement: no GPU has run this code yet (none was lent), so its
constants come from public SD1.5 numbers (float16 at 512x512 with CFG: ~2.1 GB of weights, ~0.4 GB of UNet
activations per model sample with SDPA's memory-efficient kernels, ~0.7 GB for a VAE decode of one frame) and
are meant to be corrected from ``scripts/gpu_check.sh``'s peak-VRAM column. The one check possible here: for one
512x512 frame with CFG in float32 on the CPU it gives 7.7 GiB, where the SD1.5-size model was measured at ~7 GiB
peak RSS (a random-weight SD1.5-size render on 2 CPU cores). Per model call of ``b`` frames:

    weights                                  all models, or only the UNet + ControlNets with CPU offload
  + UNet activations   cfg * b * tokens * ACTIVATION_ELEMENTS_PER_TOKEN * (1 + CONTROLNET_SHARE * units) * bytes
  + attention matrix   without fused attention (e.g. MPS): cfg * b * heads * rows * keys * bytes, rows
                       capped by the attention slice; keys = tokens x (1 first, 3 first+prev, window size)
  vs. the VAE          frames per VAE call (1 with VAE slicing) * min(pixels, tile pixels with tiling) * bytes
                       * VAE_ELEMENTS_PER_PIXEL
plus the latents of the whole shot (float32) and ``OVERHEAD_BYTES``; the peak is weights + the larger of the two.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)

GiB = 2**30
SAFETY = 0.9
"""Use at most this share of the free memory (allocator fragmentation, cuDNN workspaces)."""
OVERHEAD_BYTES = int(0.3 * GiB)
SD15_PARAMS = {"unet": 859_520_964, "controlnet": 361_278_724, "vae": 83_653_863, "text_encoder": 123_060_480}
ACTIVATION_ELEMENTS_PER_TOKEN = 50_000
"""UNet activations alive at the peak, per latent token of one model sample (SD1.5: ~0.4 GB at 64x64 in fp16)."""
CONTROLNET_SHARE = 0.35
"""A ControlNet is the UNet's encoder half: its activations add about this share per unit."""
VAE_ELEMENTS_PER_PIXEL = 1300
"""VAE decoder activations at the peak per output pixel of one frame (SD1.5: ~0.7 GB at 512x512 in fp16)."""
ATTENTION_HEADS = 8
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class MemoryPlan:
    """What the estimate needs besides the batch (all plain values: the function stays pure)."""

    width: int = 512
    height: int = 512
    frames: int = 16
    consistency: str = "first+prev"
    window_size: int = 8
    keyframe_block: int = 8
    dtype: str = "float16"
    cfg: bool = True
    controlnets: int = 1
    fused_attention: bool = True
    """SDPA's flash / memory-efficient kernels (torch 2 on CUDA, also float32, and on the CPU): no attention matrix
    is held. False: the math path (e.g. MPS), where attention slicing matters."""
    attention_slice: int = 0
    vae_slicing: bool = False
    vae_tiling: bool = False
    vae_tile: int = 512
    cpu_offload: bool = False
    weights_bytes: int = 0
    """0: SD1.5's parameter counts in ``dtype``."""


def _weights(plan: MemoryPlan) -> int:
    if plan.weights_bytes:
        total = plan.weights_bytes
        denoise = int(total * 0.85)  # UNet + ControlNet share of SD1.5's weights
    else:
        size = DTYPE_BYTES[plan.dtype]
        denoise = (SD15_PARAMS["unet"] + plan.controlnets * SD15_PARAMS["controlnet"]) * size
        total = denoise + (SD15_PARAMS["vae"] + SD15_PARAMS["text_encoder"]) * size
    return denoise if plan.cpu_offload else total


def _key_factor(plan: MemoryPlan, batch: int) -> int:
    """Keys per query token, in units of one frame's tokens."""
    mode = plan.consistency
    if mode == "first+prev":
        return 3
    if mode == "window":
        return max(plan.window_size, 1)
    if mode == "keyframes":
        return max(min(plan.keyframe_block, plan.frames), 1)
    return 1


def estimate_peak_bytes(batch: int, plan: MemoryPlan) -> int:
    """Estimated peak memory of a render with ``batch`` frames per model call (see the module docstring)."""
    size = DTYPE_BYTES[plan.dtype]
    tokens = (plan.width // 8) * (plan.height // 8)
    samples = (2 if plan.cfg else 1) * batch
    activations = samples * tokens * ACTIVATION_ELEMENTS_PER_TOKEN * (1 + CONTROLNET_SHARE * plan.controlnets) * size
    if not plan.fused_attention:
        keys = tokens * _key_factor(plan, batch)
        if plan.consistency == "window":
            rows = tokens * batch  # joint attention: the window's tokens form one sequence
            matrix_rows = min(rows, plan.attention_slice) if plan.attention_slice > 0 else rows
            activations += (2 if plan.cfg else 1) * ATTENTION_HEADS * matrix_rows * keys * size
        else:
            rows = min(tokens, plan.attention_slice) if plan.attention_slice > 0 else tokens
            per_call = 1 if plan.attention_slice > 0 else samples
            activations += per_call * ATTENTION_HEADS * rows * keys * size
    pixels = plan.width * plan.height
    if plan.vae_tiling:
        pixels = min(pixels, plan.vae_tile * plan.vae_tile)
    vae_frames = 1 if plan.vae_slicing else batch
    vae = vae_frames * pixels * VAE_ELEMENTS_PER_PIXEL * size
    state = plan.frames * 4 * tokens * 4 * 3  # latents, noise estimate, scheduler history (float32)
    return int(_weights(plan) + max(activations, vae) + state + OVERHEAD_BYTES)


def choose_batch_size(free_bytes: int, plan: MemoryPlan) -> int:
    """The largest number of frames per model call that fits ``free_bytes`` (at least 1, at most the frames)."""
    budget = free_bytes * SAFETY
    if plan.consistency == "window":
        return max(1, min(plan.window_size, plan.frames))  # windows are evaluated whole
    best = 1
    for batch in range(1, max(plan.frames, 1) + 1):
        if estimate_peak_bytes(batch, plan) <= budget:
            best = batch
        else:
            break
    return best


def fits(free_bytes: int, batch: int, plan: MemoryPlan) -> bool:
    return estimate_peak_bytes(batch, plan) <= free_bytes * SAFETY


# ---------------------------------------------------------------------------------------------------------------
# What this machine has
# ---------------------------------------------------------------------------------------------------------------


def available_ram_bytes() -> int:
    """MemAvailable of /proc/meminfo (Linux), else physical memory from sysconf, else 0."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def free_memory_bytes(device: str) -> int:
    """Free memory of ``device``: CUDA's ``mem_get_info``; the available RAM for the CPU (and MPS: unified)."""
    if device.split(":")[0] == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return available_ram_bytes()


def batch_size_for(plan: MemoryPlan, requested: int, budget_gib: float, device: str) -> int:
    """The batch size a render of ``plan`` uses: ``requested`` when given (above 0; capped by ``budget_gib`` when
    one is set), else chosen from ``budget_gib`` GiB or the device's free memory. (The job plan, ``neurender.plan``,
    builds the ``MemoryPlan`` from the settings.)"""
    budget_gib = float(budget_gib or 0.0)
    if requested > 0 and budget_gib <= 0:
        return requested
    free = int(budget_gib * GiB) if budget_gib > 0 else free_memory_bytes(device)
    chosen = choose_batch_size(free, plan)
    if requested > 0:
        chosen = min(chosen, requested)
    if not fits(free, chosen, plan):
        log.warning("even %d frame(s) per call may not fit %.1f GiB (estimated %.1f GiB): try --cpu-offload, "
                    "--vae-slicing, --vae-tiling, a smaller size", chosen, free / GiB,
                    estimate_peak_bytes(chosen, plan) / GiB)
    log.info("batch size %d for %.1f GiB %s (estimated peak %.1f GiB)", chosen, free / GiB,
             "budget" if budget_gib > 0 else f"free on {device}", estimate_peak_bytes(chosen, plan) / GiB)
    return chosen
