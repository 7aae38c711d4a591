"""``neurender serve``: the sub-command that starts the HTTP service (wired into ``neurender.cli``).

``register(subparsers)`` adds the command; ``build_config(args)`` turns the arguments into the one
:class:`ServerConfig`; ``cmd_serve(args)`` runs uvicorn until Ctrl-C and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sqlite3
from pathlib import Path
from typing import Any, Callable, Optional

from neurender.server.config import ServerConfig, is_loopback

log = logging.getLogger(__name__)

EXIT_OK, EXIT_INPUT = 0, 2
DEFAULT_PORT = 8765


def register(subparsers: Any) -> argparse.ArgumentParser:
    defaults = ServerConfig()
    p = subparsers.add_parser(
        "serve",
        help="run the HTTP service the Blender extension talks to",
        description="Run the neurender backend service. Binds 127.0.0.1 by default; any other bind requires a "
        "token (generated on first run into --token-file, mode 0600).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--data-dir", type=Path, default=defaults.data_dir, help="job database, uploads and default outputs")
    p.add_argument(
        "--root",
        action="append",
        type=Path,
        default=[],
        help="folder that request paths (pass folders, outputs, models) must lie in; repeatable. Default: home "
        "and temp folder on a loopback bind, only --data-dir otherwise",
    )
    p.add_argument("--model-root", action="append", type=Path, default=[], help="extra folder for model paths")
    p.add_argument("--token-file", type=Path, help="token file (default DATA_DIR/token)")
    p.add_argument("--require-token", action="store_true", help="require the token on loopback too")
    p.add_argument("--device", default="auto", help="device reported to clients (default: detect)")
    p.add_argument("--max-upload-mb", type=int, default=defaults.max_upload_bytes // 1024**2)
    p.add_argument("--max-upload-files", type=int, default=defaults.max_upload_files)
    p.add_argument("--max-unpacked-mb", type=int, default=defaults.max_unpacked_bytes // 1024**2)
    p.add_argument("--max-queued-jobs", type=int, default=defaults.max_queued_jobs)
    p.add_argument("--keep-days", type=float, default=defaults.keep_days,
                   help="purge finished jobs (record, uploaded passes, frames in the data folder) after this many "
                        f"days; an out_dir chosen by the client is never touched; 0 keeps them (default {defaults.keep_days:g})")
    # For tests and benchmarks of the HTTP layer: "module:function" with run_render's signature.
    p.add_argument("--runner", default="", help=argparse.SUPPRESS)
    p.add_argument("--exit-with-parent", type=int, default=0, metavar="PID",
                   help="stop when the process PID (the Blender that started this backend) is gone")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=cmd_serve)
    return p


def build_config(args: argparse.Namespace) -> ServerConfig:
    for name in ("max_upload_mb", "max_upload_files", "max_unpacked_mb", "max_queued_jobs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if not (args.keep_days >= 0):  # also refuses nan
        raise ValueError("--keep-days must be 0 (keep forever) or more")
    if not (0 <= args.port <= 65535):
        raise ValueError(f"--port {args.port} must be within 0..65535")
    return ServerConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        roots=list(args.root),
        model_roots=list(args.model_root),
        token_file=args.token_file,
        require_token=args.require_token,
        device=args.device,
        max_upload_bytes=args.max_upload_mb * 1024**2,
        max_upload_files=args.max_upload_files,
        max_unpacked_bytes=args.max_unpacked_mb * 1024**2,
        max_queued_jobs=args.max_queued_jobs,
        keep_days=args.keep_days,
    ).resolved()


def load_runner(spec: str) -> Optional[Callable[..., Any]]:
    if not spec:
        return None
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "run_render")


def make_pipeline_cache() -> Any:
    """The shared PipelineCache (models stay loaded between jobs); None if that module is not available."""
    try:
        from neurender.models.cache import PipelineCache
    except ImportError:
        log.warning("neurender.models.cache is not available; every job loads its models afresh")
        return None
    return PipelineCache()


def cmd_serve(args: argparse.Namespace) -> int:
    if getattr(args, "exit_with_parent", 0):  # first: the parent may die while the imports below run
        from neurender.parent_watch import watch

        watch(args.exit_with_parent)
    import uvicorn

    from neurender.contract import ContractError
    from neurender.server.app import create_app

    try:
        config = build_config(args)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_INPUT
    runner = load_runner(args.runner)
    try:
        app = create_app(config, runner=runner, pipelines=make_pipeline_cache())
    except ContractError as exc:
        log.error("%s", exc)
        return EXIT_INPUT
    except (OSError, sqlite3.Error) as exc:  # an unusable --data-dir or job database
        log.error("cannot use the data folder %s: %s", config.data_dir, exc)
        return EXIT_INPUT
    where = f"http://{config.host}:{config.port}"
    print(f"neurender serve: {where} (data in {config.data_dir})", flush=True)
    if config.token_required:
        print(f"token required: clients send 'Authorization: Bearer <contents of {config.token_file}>'", flush=True)
    if not is_loopback(config.host):
        print("WARNING: listening on the network; use TLS (a reverse proxy) outside a trusted studio network.")
    print("allowed roots: " + ", ".join(str(r) for r in config.roots), flush=True)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return EXIT_OK
