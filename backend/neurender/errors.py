"""Exceptions of the backend. Each boundary (CLI, HTTP server) translates these once.

``InputError`` and its subclasses are the caller's fault (a 4xx from the server, exit code 2 from the CLI);
anything else is ours.
"""

from __future__ import annotations

from neurender.contract import ContractError


class NeurenderError(Exception):
    """Base of neurender's own errors."""


class InputError(NeurenderError, ContractError):
    """Bad input from the user: the message says what is wrong and what was expected."""


class PassFolderError(InputError):
    """A pass folder that is missing, incomplete or corrupt."""


class ModelLoadError(InputError):
    """A model path that is missing, corrupt or of the wrong kind; the message names the file."""


class JobCancelled(NeurenderError):
    """Raised inside a job when its cancel token is set; finished frames stay on disk."""
