"""The FastAPI application of ``neurender serve``: assembled from its parts. No algorithm code.

Routes and JSON shapes follow the comment block in ``neurender.contract``:

* ``schemas.py``        OpenAPI models of the shapes;
* ``service.py``        the state shared by the routes (config, job store, worker) and the submission rules;
* ``routes_jobs.py``    submit (path or zip upload), list, get, cancel;
* ``routes_outputs.py`` frames, live preview, server-sent events;
* ``routes_system.py``  version handshake, releasing the models;
* ``error_answers.py``  every refusal as ``{"detail", "error_kind"}`` with the status from ``contract.ERROR_STATUS``;
* ``guard.py``          token, loopback-only and body-size checks before any route.

The runner is injected (``neurender.runner.run_render`` by default).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

import neurender
from neurender.contract import ROUTE_JOB_UPLOAD
from neurender.server import routes_jobs, routes_outputs, routes_system
from neurender.server.auth import load_or_create_token
from neurender.server.config import ServerConfig
from neurender.server.error_answers import install_error_handlers
from neurender.server.guard import GuardMiddleware
from neurender.server.retention import Janitor
from neurender.server.service import Service
from neurender.server.worker import Runner


def create_app(
    config: ServerConfig,
    runner: Optional[Runner] = None,
    pipelines: Any = None,
) -> FastAPI:
    """Build the app. ``runner`` defaults to ``neurender.runner.run_render``; ``pipelines`` is a PipelineCache
    (or anything with ``get/free/describe``) kept across jobs."""
    config = config.resolved()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    config.jobs_dir.mkdir(parents=True, exist_ok=True)
    if runner is None:
        from neurender.runner import run_render

        runner = run_render
    token = load_or_create_token(config.token_file) if config.token_required else None  # type: ignore[arg-type]
    service = Service(config, runner, pipelines, token)
    app = FastAPI(
        title="neurender",
        version=neurender.__version__,
        description="Backend of the neurender Blender extension (see neurender.contract for the shapes).",
        lifespan=_lifespan(service),
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    install_error_handlers(app)
    for module in (routes_system, routes_jobs, routes_outputs):
        app.include_router(module.router)

    def max_body(path: str) -> int:
        return config.max_upload_bytes if path == ROUTE_JOB_UPLOAD else config.max_json_bytes

    app.add_middleware(
        GuardMiddleware,
        token=token,
        allowed_hosts=config.allowed_hosts if token is None else (),
        max_body=max_body,
    )
    return app


def _lifespan(service: Service):
    """The worker and the retention sweep run while the app serves; the store closes after they stop."""

    janitor = Janitor(service.store, service.config.jobs_dir, service.config.keep_days)  # --keep-days

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.worker.start()
        janitor.start()
        try:
            yield
        finally:
            await run_in_threadpool(janitor.stop)
            await run_in_threadpool(service.worker.stop)
            service.store.close()

    return lifespan
