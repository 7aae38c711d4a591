"""Farm sub-commands: ``anchors``, ``farm``, ``merge``, ``look save|show``, and chunked ``render`` (thin adapters).

Exit codes as ``neurender.cli``: 0 success, 1 internal error (also: a farm chunk failed), 2 bad input, 130 cancelled.
With ``--progress json`` every progress record is a JSON line on stderr and the final summary a JSON line on stdout,
for farm managers to parse.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from neurender.errors import InputError

log = logging.getLogger("neurender")


def build_settings(args: argparse.Namespace):
    """(settings, look): a look's settings (``--look``), then ``--settings`` JSON, then the flags given."""
    from neurender.cli import settings_from_args
    from neurender.farm.looks import look_settings, open_look

    look = open_look(args.look) if getattr(args, "look", None) else None
    data: dict = look_settings(look.settings) if look is not None else {}
    settings = settings_from_args(args, data)
    return settings, look


def _printer(args):
    from neurender.cli import ProgressPrinter

    return ProgressPrinter(getattr(args, "progress", "bar"))


def _summary(args, record: dict, text: str) -> None:
    if getattr(args, "progress", "bar") == "json":
        print(json.dumps(record), flush=True)
    else:
        print(text)


def cmd_render_chunk(args: argparse.Namespace) -> int:
    """``neurender render PASS_DIR --out OUT --frames A-B --overlap N --anchors DIR [--look FILE]``."""
    from neurender.farm.chunks import render_chunk
    from neurender.runner import CancelToken

    settings, look = build_settings(args)
    anchors = args.anchors or (look.anchors if look is not None else None)
    printer = _printer(args)
    cancel = CancelToken()
    try:
        result = render_chunk(args.pass_dir, args.out, settings, overlap=args.overlap or 0, anchors=anchors,
                              progress=printer, cancel=cancel)
    finally:
        printer.close()
    if result.random_model:
        log.warning("The frames in %s come from a RANDOM-WEIGHT model: they are noise, not a rendering.", args.out)
    _summary(args, {"event": "finished", **result.to_dict()},
             f"chunk {result.chunk.frames_arg}: {len(result.written)} frames written, "
             f"{len(result.pending)} waiting for a neighbouring chunk -> {args.out}")
    return 0


def cmd_anchors(args: argparse.Namespace) -> int:
    from neurender.farm.anchors import compute_anchors
    from neurender.runner import CancelToken

    settings, _ = build_settings(args)
    frames = [int(f) for f in args.anchor_frames.split(",")] if args.anchor_frames else None
    printer = _printer(args)

    def progress(step: int, steps: int) -> None:
        from neurender.contract import Progress

        printer(Progress(step=step, steps_total=steps, phase="anchors", message=f"anchor step {step}/{steps}"))

    try:
        anchors = compute_anchors(args.pass_dir, args.out, settings, count=args.count, frames=frames,
                                  progress=progress, cancel=CancelToken())
    finally:
        printer.close()
    record = {"event": "finished", "anchors": str(anchors.folder), "frames": anchors.frames, "digest": anchors.digest}
    _summary(args, record,
             f"anchors of frames {anchors.frames} -> {anchors.folder}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from neurender.farm.merge import CHUNKS_DIR, merge_chunks

    if not (Path(args.out) / CHUNKS_DIR).is_dir():  # a mistyped OUT must not be a successful merge of nothing
        raise InputError(f"{args.out} holds no chunks ({CHUNKS_DIR}/); render the chunks into it first")
    result = merge_chunks(args.out, final=args.final)
    record = {"event": "finished", "written": result.written, "skipped": result.skipped, "pending": result.pending}
    _summary(args, record, f"{len(result.written)} frames written, {len(result.skipped)} already there, "
                           f"{len(result.pending)} pending")
    return 0


def shot_out_dirs(out: Path, pass_dirs: list[Path]) -> list[Path]:
    """``OUT`` for one shot; for several ``OUT/<pass folder name>``, or as many trailing path parts as it takes to
    tell them apart (``/show/sh010/passes`` and ``/show/sh020/passes`` -> ``OUT/sh010/passes``, ``OUT/sh020/passes``)."""
    if len(pass_dirs) == 1:
        return [Path(out)]
    parts = [Path(p).resolve().parts[1:] for p in pass_dirs]  # without the root: always inside OUT
    if len(set(parts)) != len(parts):
        raise InputError("the same pass folder is given twice; each shot needs its own output folder")
    for k in range(1, max(len(p) for p in parts) + 1):
        tails = [Path(*p[-k:]) for p in parts]
        if len(set(tails)) == len(tails):
            return [Path(out) / t for t in tails]
    raise InputError("the pass folders cannot be told apart by their paths")  # pragma: no cover - distinct paths


def cmd_farm(args: argparse.Namespace) -> int:
    from neurender.farm.ray_farm import FarmOptions, Shot, run_farm

    settings, look = build_settings(args)
    shared = args.anchors or (look.anchors if look is not None else None)
    shots = [
        Shot(pass_dir=p, out_dir=o, settings=settings, anchors=shared, compute_anchors=not args.no_anchors,
             anchor_count=args.anchor_count)
        for p, o in zip(args.pass_dirs, shot_out_dirs(Path(args.out), args.pass_dirs))
    ]
    options = FarmOptions(address=args.ray_address, chunk_size=args.chunk_size, overlap=args.overlap,
                          gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task, max_retries=args.max_retries)

    def events(record: dict) -> None:
        if args.progress == "json":
            print(json.dumps(record), flush=True)
        elif args.progress == "bar":
            log.info("%s", " ".join(f"{k}={v}" for k, v in record.items()))

    report = run_farm(shots, options, events=events)
    _summary(args, {"event": "finished", "ok": report.ok, "failures": report.failures,
                    "frames_written": report.frames_written},
             f"{len(report.chunks_done)} chunks done, {len(report.failures)} failed")
    return 0 if report.ok else 1


def cmd_look_save(args: argparse.Namespace) -> int:
    from neurender.farm.looks import save_look

    settings, look = build_settings(args)
    anchors = args.anchors or (look.anchors if look is not None else None)
    path = save_look(args.file, settings, anchors=anchors, name=args.name or "")
    _summary(args, {"event": "finished", "look": str(path), "anchors": bool(anchors)}, f"look saved to {path}")
    return 0


def cmd_look_show(args: argparse.Namespace) -> int:
    from neurender.farm.looks import look_settings, open_look

    look = open_look(args.file)
    print(json.dumps({"name": look.name, "anchors": str(look.anchors) if look.anchors else None,
                      "settings": look_settings(look.settings)}, indent=1))
    return 0


def register(sub) -> None:
    from neurender.cli import add_settings_arguments, cmd_render

    render = sub.choices["render"]  # a chunk of a farm render is `neurender render` with chunk flags (issue #7)
    render.add_argument("--overlap", type=int, metavar="N", help="also render N frames on each side of --frames and "
                        "blend them with the neighbouring chunks (render farm)")
    render.add_argument("--anchors", type=Path, metavar="DIR", help="shared anchors from `neurender anchors`")
    render.add_argument("--look", type=Path, metavar="FILE", help="a look from `neurender look save`")

    def render_or_chunk(args: argparse.Namespace) -> int:
        if any(getattr(args, name, None) is not None for name in ("overlap", "anchors", "look")):
            return cmd_render_chunk(args)
        return cmd_render(args)

    render.set_defaults(func=render_or_chunk)

    def progress_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--progress", choices=("bar", "json", "none"), default="bar")

    anchors = sub.add_parser("anchors", help="compute the shared anchors of a shot once (for chunked/farm renders)")
    anchors.add_argument("pass_dir", type=Path)
    anchors.add_argument("--out", type=Path, required=True, help="anchors folder")
    anchors.add_argument("--count", type=int, default=3, help="number of anchor frames spread over the shot")
    anchors.add_argument("--anchor-frames", dest="anchor_frames", help="explicit anchor frames, e.g. 1,24,48")
    anchors.add_argument("--look", type=Path, help="start from a look file's settings")
    progress_flag(anchors)
    add_settings_arguments(anchors)
    anchors.set_defaults(func=cmd_anchors)

    merge = sub.add_parser("merge", help="blend finished chunks in OUT into the final frames (idempotent)")
    merge.add_argument("out", type=Path)
    merge.add_argument("--final", action="store_true", help="also write frames whose neighbouring chunk is missing")
    progress_flag(merge)
    merge.set_defaults(func=cmd_merge)

    farm = sub.add_parser("farm", help="render shots as chunks on a Ray cluster")
    farm.add_argument("pass_dirs", type=Path, nargs="+", metavar="PASS_DIR")
    farm.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per shot for several)")
    farm.add_argument("--ray-address", dest="ray_address", required=True,
                      help="Ray cluster address, e.g. 10.0.0.5:6379 or auto")
    farm.add_argument("--chunk-size", dest="chunk_size", type=int, default=24)
    farm.add_argument("--overlap", type=int, default=4)
    farm.add_argument("--anchors", type=Path, help="share these precomputed anchors instead of computing them per shot")
    farm.add_argument("--anchor-count", dest="anchor_count", type=int, default=3)
    farm.add_argument("--no-anchors", dest="no_anchors", action="store_true")
    farm.add_argument("--look", type=Path)
    farm.add_argument("--gpus-per-task", dest="gpus_per_task", type=float, default=1.0)
    farm.add_argument("--cpus-per-task", dest="cpus_per_task", type=float, default=1.0)
    farm.add_argument("--max-retries", dest="max_retries", type=int, default=3)
    progress_flag(farm)
    add_settings_arguments(farm)
    farm.set_defaults(func=cmd_farm)

    look = sub.add_parser("look", help="save or show a look (settings + anchors reusable on other shots)")
    look_sub = look.add_subparsers(dest="look_command", required=True)
    save = look_sub.add_parser("save", help="save a look file")
    save.add_argument("file", type=Path)
    save.add_argument("--anchors", type=Path, help="anchors folder to include")
    save.add_argument("--name")
    save.add_argument("--look", type=Path, help="start from another look")
    progress_flag(save)
    add_settings_arguments(save)
    save.set_defaults(func=cmd_look_save)
    show = look_sub.add_parser("show", help="print a look's settings")
    show.add_argument("file", type=Path)
    show.set_defaults(func=cmd_look_show)

