"""``neurender`` command line: a thin adapter over the job runner (no algorithm code here).

Exit codes: 0 success, 1 internal error, 2 bad input (settings, pass folder, model paths), 130 cancelled (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from neurender import __version__
from neurender.contract import (
    CONSISTENCY_MODES,
    CONTROL_KINDS,
    DEFLICKER_SPACES,
    DEVICES,
    DTYPES,
    PREDICTION_TYPES,
    SCHEDULERS,
    ContractError,
    ControlNetUnit,
    LoraSpec,
    Progress,
    RenderSettings,
    parse_step_list,
)

log = logging.getLogger("neurender")

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


# ----------------------------------------------------------------------------------------------------------------
# Argument parsing
# ----------------------------------------------------------------------------------------------------------------


def _controlnet_arg(text: str) -> ControlNetUnit:
    """``KIND=PATH[@WEIGHT[:START:END]]``, e.g. ``depth=/models/cn-depth@0.8:0:0.9``."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--controlnet {text!r}: expected KIND=PATH[@WEIGHT[:START:END]]")
    kind, rest = text.split("=", 1)
    path, weight, start, end = rest, 1.0, 0.0, 1.0
    if "@" in rest:
        path, opts = rest.rsplit("@", 1)
        parts = opts.split(":")
        try:
            weight = float(parts[0])
            if len(parts) == 3:
                start, end = float(parts[1]), float(parts[2])
            elif len(parts) != 1:
                raise ValueError
        except ValueError:
            raise argparse.ArgumentTypeError(f"--controlnet {text!r}: weight/start/end must be numbers") from None
    if kind not in CONTROL_KINDS:
        raise argparse.ArgumentTypeError(f"--controlnet kind {kind!r} is not one of {', '.join(CONTROL_KINDS)}")
    return ControlNetUnit(kind=kind, model=path, weight=weight, guidance_start=start, guidance_end=end)


def _lora_arg(text: str) -> LoraSpec:
    path, weight = text, 1.0
    if "@" in text:
        path, w = text.rsplit("@", 1)
        try:
            weight = float(w)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--lora {text!r}: weight must be a number") from None
    return LoraSpec(path=path, weight=weight)


def _steps_arg(text: str) -> list[int]:
    try:
        return parse_step_list(text)
    except ContractError as exc:
        raise argparse.ArgumentTypeError(f"--deflicker-steps: {exc}") from None


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    """Render settings flags (shared by ``render`` and the farm commands). Unset flags keep --settings/defaults."""
    d = argparse.SUPPRESS
    p.add_argument("--settings", type=Path, help="JSON file with RenderSettings; flags below override it")
    p.add_argument("--model", default=d, help="SD 1.5 checkpoint: diffusers folder or single .safetensors/.ckpt file")
    p.add_argument("--controlnet", dest="controlnets", action="append", type=_controlnet_arg, default=d,
                   metavar="KIND=PATH[@W[:S:E]]", help=f"ControlNet unit; KIND in {', '.join(CONTROL_KINDS)} (repeatable)")
    p.add_argument("--lora", dest="loras", action="append", type=_lora_arg, default=d, metavar="PATH[@W]")
    p.add_argument("--embedding", dest="embeddings", action="append", default=d, metavar="PATH",
                   help="textual-inversion embedding file or folder (repeatable); use it in a prompt by file name")
    p.add_argument("--prediction-type", dest="prediction_type", choices=PREDICTION_TYPES, default=d,
                   help="what the model predicts (auto: a .yaml next to the checkpoint, else epsilon)")
    p.add_argument("--prompt", default=d)
    p.add_argument("--negative-prompt", dest="negative_prompt", default=d)
    p.add_argument("--seed", type=int, default=d)
    p.add_argument("--steps", type=int, default=d)
    p.add_argument("--guidance", dest="guidance_scale", type=float, default=d, help="classifier-free guidance scale")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=d)
    p.add_argument("--width", type=int, default=d, help="multiple of 8 (default: the passes' size rounded down)")
    p.add_argument("--height", type=int, default=d)
    p.add_argument("--consistency", choices=CONSISTENCY_MODES, default=d)
    p.add_argument("--window-size", dest="window_size", type=int, default=d)
    p.add_argument("--window-stride", dest="window_stride", type=int, default=d)
    p.add_argument("--keyframe-block", dest="keyframe_block", type=int, default=d,
                   help="keyframes mode: one keyframe per block of N frames, redrawn every step")
    p.add_argument("--img2img-strength", dest="img2img_strength", type=float, default=d,
                   help="keyframes mode: restyle the beauty render from its DDIM inversion (0: from noise, 1: full)")
    p.add_argument("--inversion-steps", dest="inversion_steps", type=int, default=d)
    p.add_argument("--pnp-features", dest="pnp_features", type=float, default=d,
                   help="img2img: fraction of steps with the render's decoder features injected (Plug-and-Play)")
    p.add_argument("--pnp-attention", dest="pnp_attention", type=float, default=d,
                   help="img2img: fraction of steps with the render's decoder attention queries/keys injected")
    p.add_argument("--reference", dest="reference_image", default=d, help="image used as an extra attention anchor")
    p.add_argument("--motion-module", dest="motion_module", default=d, metavar="PATH",
                   help="AnimateDiff motion module: a MotionAdapter folder or an mm_sd_v15_v2.ckpt-style file")
    p.add_argument("--context-length", dest="context_length", type=int, default=d,
                   help="motion module: frames per context window (default 16)")
    p.add_argument("--context-overlap", dest="context_overlap", type=int, default=d,
                   help="motion module: frames shared by neighbouring windows, blended (default 4)")
    p.add_argument("--no-fixed-noise", dest="fixed_noise", action="store_false", default=d)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=d,
                   help="frames per model call (memory); 0: chosen from --vram-budget or the free memory")
    p.add_argument("--attention-slice", dest="attention_slice", type=int, default=d, metavar="TOKENS",
                   help="attention slicing: at most TOKENS query tokens per attention call (0: off)")
    p.add_argument("--vae-slicing", dest="vae_slicing", action="store_true", default=d,
                   help="VAE decode/encode one frame at a time")
    p.add_argument("--vae-tiling", dest="vae_tiling", action="store_true", default=d,
                   help="tiled VAE decode/encode (large frames; nearly equal output)")
    p.add_argument("--cpu-offload", dest="cpu_offload", action="store_true", default=d,
                   help="models wait in CPU memory, each moved to the GPU while it runs (6-8 GB cards)")
    p.add_argument("--vram-budget", dest="vram_budget", type=float, default=d, metavar="GIB",
                   help="memory the render may use; picks the batch size (0: the device's free memory)")
    p.add_argument("--depth-smoothing", dest="depth_smoothing", type=int, default=d,
                   help="Savitzky-Golay window over per-frame depth ranges (0: one shot-wide range)")
    p.add_argument("--deflicker-steps", dest="deflicker_steps", type=_steps_arg, default=d, metavar="I,J,...",
                   help="0-based denoising step indices at which the in-iteration deflicker runs, e.g. 4,9,14 "
                        "(index i shows as step i+1 in the progress)")
    p.add_argument("--deflicker-space", dest="deflicker_space", choices=DEFLICKER_SPACES, default=d,
                   help="in-iteration deflicker on decoded frames (DiffSynth) or on latents (cheaper)")
    p.add_argument("--deflicker-method", dest="deflicker_method", choices=("auto", "exact", "flow", "patchmatch"), default=d)
    p.add_argument("--deflicker-window", dest="deflicker_window", type=int, default=d)
    p.add_argument("--deflicker-compensate", dest="deflicker_compensate", action="store_true", default=d,
                   help="after blending, match each frame's colour statistics to its window's input")
    p.add_argument("--deflicker-sharpen", dest="deflicker_sharpen", action="store_true", default=d,
                   help="after blending, contrast and sharpness x1.1 (DiffSynth)")
    p.add_argument("--post-deflicker", dest="post_deflicker", action="store_true", default=d,
                   help="deflicker the finished frames along the passes' exact motion before writing them")
    p.add_argument("--frames", default=d, help="frame range A-B (default: the whole shot)")
    p.add_argument("--device", choices=DEVICES, default=d)
    p.add_argument("--dtype", choices=DTYPES, default=d)
    p.add_argument("--overwrite", action="store_true", default=d, help="render frames that already exist again")


def settings_from_args(args: argparse.Namespace, base: Optional[dict] = None) -> RenderSettings:
    """One typed settings object: ``base`` (e.g. a look's settings), then --settings JSON, then every flag given."""
    data: dict = dict(base or {})
    if getattr(args, "settings", None):
        try:
            loaded = json.loads(Path(args.settings).read_text())
        except FileNotFoundError:
            raise ContractError(f"settings file {args.settings} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ContractError(f"settings file {args.settings} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ContractError(f"settings file {args.settings} must hold a JSON object of render settings")
        data.update(loaded)
    settings = RenderSettings.from_dict(data, check=False) if data else RenderSettings()
    for name in RenderSettings.__dataclass_fields__:
        if hasattr(args, name):
            setattr(settings, name, getattr(args, name))
    settings.check()  # the one check of this process: the runner trusts it (JobSpec.settings_checked)
    return settings


# ----------------------------------------------------------------------------------------------------------------
# Progress display
# ----------------------------------------------------------------------------------------------------------------


class ProgressPrinter:
    """A one-line bar on a terminal, or JSON lines (``--progress json``) for farm managers."""

    def __init__(self, mode: str, stream=None) -> None:
        self.mode = mode
        self.stream = stream or sys.stderr
        self._last = 0.0
        self._started = time.monotonic()
        self._open_line = False

    def __call__(self, p: Progress) -> None:
        if self.mode == "none":
            return
        if self.mode == "json":
            record = {"event": "progress", **p.to_dict(), "elapsed": round(time.monotonic() - self._started, 3)}
            print(json.dumps(record), file=self.stream, flush=True)
            return
        now = time.monotonic()
        if now - self._last < 0.1 and p.phase not in ("done",):
            return
        self._last = now
        width = 24
        filled = int(width * p.fraction)
        bar = "#" * filled + "-" * (width - filled)
        line = (f"\r[{bar}] step {p.step}/{p.steps_total}  frames {p.frames_done}/{p.frames_total}  "
                f"{p.phase:<8} {p.message[:40]:<40}")
        self._open_line = p.phase != "done"
        print(line, end="" if self._open_line else "\n", file=self.stream, flush=True)

    def close(self) -> None:
        """End an unfinished bar line so that messages after it start on their own line."""
        if self._open_line:
            print(file=self.stream, flush=True)
            self._open_line = False


# ----------------------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------------------


def cmd_render(args: argparse.Namespace) -> int:
    from neurender.runner import CancelToken, JobSpec, run_render

    settings = settings_from_args(args)
    cancel = CancelToken()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):  # first Ctrl-C stops at the next step; finished frames stay
        if cancel.cancelled:
            raise KeyboardInterrupt
        log.warning("cancelling at the next denoising step (Ctrl-C again to abort at once)")
        cancel.cancel()

    signal.signal(signal.SIGINT, on_sigint)
    printer = ProgressPrinter(args.progress)
    try:
        result = run_render(
            JobSpec(pass_dir=args.pass_dir, out_dir=args.out, settings=settings, save_controls=args.save_controls,
                    settings_checked=True),
            progress=printer,
            cancel=cancel,
        )
    finally:
        printer.close()
        signal.signal(signal.SIGINT, previous)
    if result.random_model:
        log.warning("The frames in %s come from a RANDOM-WEIGHT model: they are noise, not a rendering.", result.out_dir)
    summary = {
        "event": "finished",
        "out_dir": str(result.out_dir),
        "written": result.frames_written,
        "skipped": result.frames_skipped,
        "random_model": result.random_model,
    }
    if args.progress == "json":
        print(json.dumps(summary), flush=True)
    else:
        print(f"{len(result.frames_written)} frames written, {len(result.frames_skipped)} already done -> {result.out_dir}")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from neurender.models.doctor import environment_report, inspect_model

    report = {"neurender": __version__, "environment": environment_report()}
    report["models"] = [inspect_model(p) for p in args.model or []]
    from neurender.models.gpu_doctor import gpu_report, print_gpu_report  # the GPU section (issue 15)

    report["gpu"] = gpu_report(getattr(args, "vram_budget", 0.0) or 0.0)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"neurender {__version__}")
        for key, value in report["environment"].items():
            print(f"  {key}: {value}")
        for m in report["models"]:
            status = "ok" if m.get("ok") else "REFUSED"
            print(f"  model {m.get('path')}: {m.get('kind')} {status}: {m.get('render')}")
        print_gpu_report(report["gpu"])
    return EXIT_OK if all(m.get("ok") for m in report["models"]) else EXIT_INPUT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurender", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"neurender {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser("render", help="render a pass folder into frames")
    render.add_argument("pass_dir", type=Path, help="pass folder (manifest.json + EXR per frame)")
    render.add_argument("--out", type=Path, required=True, help="output folder for frame_NNNN.png")
    render.add_argument("--save-controls", dest="save_controls", type=Path, help="also write the control images used")
    render.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    add_settings_arguments(render)
    render.set_defaults(func=cmd_render)  # the farm's register() adds its chunk flags (farm/cli_farm.py)

    doctor = sub.add_parser("doctor", help="report torch/CUDA and check model paths")
    doctor.add_argument("--model", action="append", help="a model path to check (repeatable)")
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--vram-budget", dest="vram_budget", type=_budget_gib, default=0.0, metavar="GIB",
                        help="report the batch sizes for this much memory instead of the free VRAM/RAM")
    doctor.set_defaults(func=cmd_doctor)

    for module in _optional_commands():
        module.register(sub)
    return parser


def _optional_commands():
    """Sub-commands that live next to their subsystem, each exposing ``register(subparsers)`` (loaded by name: they
    import this module's shared flags and helpers, never the other way round)."""
    import importlib

    names = ["neurender.server.cli_serve", "neurender.deflicker.cli_deflicker", "neurender.metrics.cli_metrics",
             "neurender.farm.cli_farm"]
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise  # a missing dependency inside an existing module is a real error
    return modules


def _budget_gib(text: str) -> float:
    """``doctor --vram-budget``: GiB within the contract's 0..4096 (RenderSettings.vram_budget's rule)."""
    from neurender.contract import RenderSettings

    try:
        value = float(text)
        RenderSettings(vram_budget=value).check()
    except (ValueError, ContractError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GiB within 0..4096") from None
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("diffusers", "transformers", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not args.verbose else logging.INFO)
    from neurender.errors import JobCancelled

    try:
        return int(args.func(args) or 0)
    except ContractError as exc:  # includes InputError, PassFolderError, ModelLoadError
        log.error("%s", exc)
        return EXIT_INPUT
    except (JobCancelled, KeyboardInterrupt):
        log.error("cancelled; finished frames are kept and a re-run resumes")
        return EXIT_CANCELLED
    except Exception:  # internal failure: full traceback for the bug report
        log.exception("internal error")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
