"""OpenAPI models of ``neurender serve``: documentation of the JSON shapes defined in ``neurender.contract``."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from neurender.contract import ERROR_STATUS
from neurender.server.settings_schema import render_settings_schema

SettingsJSON = Annotated[dict[str, Any], WithJsonSchema(render_settings_schema())]
"""RenderSettings as JSON: validated by the contract (``RenderSettings.from_dict``), published with its typed schema."""


class ProgressModel(BaseModel):
    frames_done: int
    frames_total: int
    step: int
    steps_total: int
    phase: str
    message: str
    preview_step: int = 0
    random_weights: bool = False
    device: str = ""
    dtype: str = ""


class JobModel(BaseModel):
    id: str
    state: str = Field(description="queued | running | done | failed | cancelled")
    progress: ProgressModel
    error: Optional[str]
    error_kind: Optional[str] = Field(description="ErrorKind of a failed or cancelled job (see neurender.contract)")
    created: float
    updated: float
    frames_done: list[int]
    frame_start: int
    frame_end: int
    out_dir: str
    settings: SettingsJSON


class JobListModel(BaseModel):
    jobs: list[JobModel]


class VersionModel(BaseModel):
    backend_version: str
    protocol_version: int
    pass_schema_version: int
    device: str
    models: dict[str, Any]
    token_required: bool


class FreeModel(BaseModel):
    freed: bool
    detail: str = ""


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pass_dir: str = Field(description="absolute path of a pass folder inside one of the server's roots")
    settings: SettingsJSON = Field(default_factory=dict, description="RenderSettings as JSON")
    out_dir: Optional[str] = Field(default=None, description="absolute output folder inside the roots (optional)")


class ErrorModel(BaseModel):
    detail: str
    error_kind: str = Field(description="one of neurender.contract.ErrorKind")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorModel} for code in sorted(set(ERROR_STATUS.values()))
}
"""The documented error answers of every route: each status the server uses, with the ``ErrorModel`` body."""


def png_answer(description: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route answering a PNG image."""
    return {**ERRORS, 200: {"content": {"image/png": {}}, "description": description}}
