"""``neurender metrics FRAMES_DIR [--passes PASS_DIR] [--reference DIR] [--guide DIR] [--json] [--plot PNG]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "metrics",
        help="temporal consistency (warp error, flicker) and fidelity (PSNR, SSIM, sharpness) of a frame sequence",
    )
    p.add_argument("frames_dir", type=Path, help="folder of PNG/EXR frames numbered like frame_0001.png")
    p.add_argument("--passes", type=Path, help="pass folder: exact motion from its Vector pass (else DIS optical flow)")
    p.add_argument("--reference", type=Path, help="reference frames (same numbers) for PSNR/SSIM/sharpness/flicker")
    p.add_argument("--guide", type=Path, help="frames to compute optical flow on (default: the reference, else FRAMES_DIR)")
    p.add_argument("--plot", type=Path, help="write a PNG plot of the per-pair warp error here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neurender.metrics.report import evaluate_folders

    result = evaluate_folders(args.frames_dir, passes=args.passes, reference=args.reference, guide=args.guide)
    if args.plot:
        from neurender.metrics.plot import plot_warp_error

        values = [v if v is not None else float("nan") for v in result["warp_error_per_pair"]]
        result["plot"] = str(plot_warp_error({"frames": values}, args.plot))
    if args.json:
        print(json.dumps(result, indent=1, allow_nan=False))
        return 0
    print(f"{result['frames']} frames from {result['frames_dir']} (motion: {result['motion']})")
    for key in ("warp_error", "pixel_mse", "visible_fraction", "brightness_flicker", "psnr", "ssim",
                "sharpness_ratio_gradient", "sharpness_ratio_laplacian", "sharpness_gradient", "plot"):
        if key in result:
            value = result[key]
            print(f"  {key:26s} {value:.6g}" if isinstance(value, float) else f"  {key:26s} {value}")
    return 0
