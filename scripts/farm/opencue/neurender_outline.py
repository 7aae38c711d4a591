"""Submit a neurender shot to OpenCue with PyOutline: passes (Blender) -> anchors -> render chunks -> merge.

    python neurender_outline.py SHOT.blend OUT_ROOT 1-240 --chunk 24 --overlap 4 --show myshow --shot sh010 \
        -- --look /show/looks/toon.nrlook

Cuebot replaces #FRAME_START# / #FRAME_END# with each chunk's first and last frame. Every step is idempotent (finished
frames skipped, atomic outputs), so retried frames are safe. Needs the `opencue` and `outline` packages (pycue,
pyoutline) and a configured Cuebot; `neurender` and `blender` on the render hosts.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(args, extra):
    from outline import Outline
    from outline.modules.shell import Shell

    passes, frames_dir = os.path.join(args.out, "passes"), os.path.join(args.out, "frames")
    anchors_dir = os.path.join(frames_dir, "anchors")
    first = args.frames.split("-")[0]
    ol = Outline(f"neurender_{os.path.basename(args.blend)[:-6]}", shot=args.shot, show=args.show)
    write = Shell("passes", command=[args.blender, "-b", args.blend, "--python", os.path.join(HERE, "write_passes.py"),
                                     "--", "--out", passes, "--frames", args.frames], range=first)
    anchors = Shell("anchors", command=[args.neurender, "anchors", passes, "--out", anchors_dir, "--frames", args.frames,
                                        "--progress", "json", *extra], range=first)
    render = Shell("render", command=[args.neurender, "render", passes, "--out", frames_dir,
                                      "--frames", "#FRAME_START#-#FRAME_END#", "--overlap", str(args.overlap),
                                      "--anchors", anchors_dir, "--progress", "json", *extra],
                   range=args.frames, chunk=args.chunk)
    merge = Shell("merge", command=[args.neurender, "merge", frames_dir, "--final", "--progress", "json"], range=first)
    anchors.depend_all(write)
    render.depend_all(anchors)
    merge.depend_all(render)
    for layer in (write, anchors, render, merge):
        ol.add_layer(layer)
    return ol


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("blend")
    ap.add_argument("out")
    ap.add_argument("frames", help="A-B")
    ap.add_argument("--chunk", type=int, default=24, help="frames per task; at least twice the overlap")
    ap.add_argument("--overlap", type=int, default=4)
    ap.add_argument("--show", default=os.environ.get("SHOW", "testing"))
    ap.add_argument("--shot", default=os.environ.get("SHOT", "sh010"))
    ap.add_argument("--neurender", default="neurender")
    ap.add_argument("--blender", default="blender")
    args = ap.parse_args(argv)
    from outline import cuerun

    cuerun.launch(build(args, extra), use_pycuerun=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
