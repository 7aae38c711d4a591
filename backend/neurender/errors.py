"""Exceptions of the backend. Each boundary (CLI, HTTP server) translates these once.

``InputError`` and its subclasses are the caller's fault (a 4xx from the server, exit code 2 from the CLI);
anything else is ours. Each class carries its ``ErrorKind`` (``kind``; a raise site may pass a more precise one),
which is the only thing the boundaries look at to choose a status code or an exit code.
"""

from __future__ import annotations

from neurender.contract import ContractError, ErrorKind


class NeurenderError(Exception):
    """Base of neurender's own errors."""


class InputError(NeurenderError, ContractError):
    """Bad input from the user: the message says what is wrong and what was expected."""

    kind = ErrorKind.BAD_INPUT


class PassFolderError(InputError):
    """A pass folder that is missing, incomplete or corrupt."""

    kind = ErrorKind.BAD_PASS_FOLDER


class ModelLoadError(InputError):
    """A model path that is corrupt or of the wrong kind; the message names the file."""

    kind = ErrorKind.MODEL_INVALID


class ModelMissing(ModelLoadError):
    """A model path that does not exist."""

    kind = ErrorKind.MODEL_MISSING


class AnchorError(InputError):
    """A render-farm anchor folder that is missing, corrupt or was computed for other settings."""

    kind = ErrorKind.BAD_ANCHORS


class OutputConflict(InputError):
    """The output folder holds frames of other settings."""

    kind = ErrorKind.OUTPUT_CONFLICT


class ServiceRefusal(InputError):
    """A refusal of the HTTP service that is not about the job's content (queue full, busy, not found ...);
    raise it with the precise ``kind``."""


class JobCancelled(NeurenderError):
    """Raised inside a job when its cancel token is set; finished frames stay on disk."""

    kind = ErrorKind.CANCELLED
