"""``neurender deflicker FRAMES_DIR --out OUT_DIR [--passes PASS_DIR] [--window N] [--method ...] [--engine ...]``.

A thin adapter: reads a PNG/EXR sequence, matches it to a pass folder's frames by the number in each file name,
deflickers it with ``sequence.Deflicker`` and writes every frame (same name and format) atomically into OUT_DIR.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


DEFAULT_WINDOW = 4
"""``neurender.deflicker.robust.DEFAULT_WINDOW`` (not imported: the CLI parser must not load torch)."""


def register(subparsers) -> None:
    p = subparsers.add_parser("deflicker", help="deflicker a PNG/EXR frame sequence (exact motion from a pass folder)")
    p.add_argument("frames_dir", type=Path, help="folder of frames (PNG 8/16-bit or EXR), numbered in their names")
    p.add_argument("--out", type=Path, required=True, help="output folder (same file names)")
    p.add_argument("--passes", type=Path, help="pass folder of the shot: exact motion instead of estimated flow")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help=f"neighbours on each side fused into a frame (default {DEFAULT_WINDOW})")
    p.add_argument("--method", choices=("auto", "exact", "flow", "patchmatch"), default="auto",
                   help="motion: auto = exact with --passes, else estimated optical flow (DIS); patchmatch on request")
    p.add_argument("--engine", choices=("fusion", "average"), default="fusion",
                   help="fusion: undo colour flicker and fuse robustly (default); average: plain blend along the motion")
    p.add_argument("--interpolation", choices=("bicubic", "bilinear"), default="bicubic",
                   help="sampling along the motion: bicubic keeps fine detail (default), bilinear is faster")
    p.add_argument("--compensate", action="store_true", help="match colour statistics to the window average")
    p.add_argument("--sharpen", action="store_true", help="contrast x1.1 and sharpness x1.1 after blending")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neurender.deflicker.motion import MotionSource
    from neurender.deflicker.sequence import DeflickerOptions, deflicker_frames
    from neurender.deflicker.sequence_io import list_sequence, read_image, write_image
    from neurender.errors import InputError

    if not (0 <= args.window <= 32):
        raise InputError(f"--window {args.window} must be within 0..32")
    out_dir = Path(args.out)
    if out_dir.resolve() == Path(args.frames_dir).resolve():
        raise InputError("--out must be another folder than FRAMES_DIR (frames are read while outputs are written)")
    frames = list_sequence(args.frames_dir)
    images = [read_image(f.path) for f in frames]
    shapes = {im.rgb.shape for im in images}
    if len(shapes) != 1:
        raise InputError(f"the frames in {args.frames_dir} differ in size: {sorted(s[:2] for s in shapes)}")
    import numpy as np

    h, w = images[0].rgb.shape[:2]
    stack = np.stack([im.rgb for im in images])
    numbers = [f.number for f in frames]
    if args.passes is not None:
        from neurender.passes.folder import PassFolder

        folder = PassFolder.open(args.passes, frames=(numbers[0], numbers[-1]))
        missing = [n for n in numbers if n not in folder.frames]
        if missing:
            raise InputError(
                f"frames {', '.join(map(str, missing[:5]))} of {args.frames_dir} are not in the pass folder {args.passes} "
                f"(it has frames {folder.frames[0]}-{folder.frames[-1]}); frames are matched by the number in the name"
            )
        source = MotionSource.from_folder(folder, frames=numbers, height=h, width=w, guides=list(stack),
                                          interpolation=args.interpolation)
    else:
        if args.method == "exact":
            raise InputError("--method exact needs --passes PASS_DIR (the exact motion comes from the pass folder)")
        source = MotionSource(guides=list(stack), interpolation=args.interpolation)
    method = source.resolve(args.method)
    log.info("deflickering %d frames (%dx%d) with %s motion, window %d", len(frames), w, h, method, args.window)
    start = time.perf_counter()
    hdr = images[0].kind == "exr"
    scale = max(float(stack.max()), 1.0) if hdr else 1.0
    out = deflicker_frames(stack / scale, source, DeflickerOptions(window=args.window, method=args.method,
                                                                    engine=args.engine, compensate=args.compensate,
                                                                    sharpen=args.sharpen)) * scale
    for f, im, rgb in zip(frames, images, out):
        write_image(out_dir / f.path.name, rgb, im)
    log.info("wrote %d frames to %s in %.1f s", len(frames), out_dir, time.perf_counter() - start)
    return 0
