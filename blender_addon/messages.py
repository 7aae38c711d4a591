"""What the artist reads when something goes wrong: one sentence per kind of error, written once, here (no bpy).

The backend names the kind of every refusal and failure (``error_kind`` in its 4xx/5xx bodies and failed jobs,
the wire contract's ``ErrorKind``); the add-on words each kind for the artist with the panel's names for things,
never the command line's. The backend's own ``detail`` is kept as the full message (copied by "Copy Message")
and appended only where it names the thing to fix (a path, a field) rather than a command-line remedy.
"""

from __future__ import annotations

import re

# kinds the add-on itself detects (no answer, or not a neurender answer)
UNREACHABLE = "unreachable"
VERSION_MISMATCH = "version_mismatch"
NOT_NEURENDER = "not_neurender"
BAD_URL = "bad_url"
LOCAL_BACKEND = "local_backend"
SERVER = "server"
UPLOAD_BROKEN = "upload_broken"

# (sentence, append the backend's detail?)
WORDING: dict[str, tuple[str, bool]] = {
    "bad_request": ("The backend could not read the add-on's request (the add-on and backend may not match)", True),
    "bad_header": ("The backend could not read the add-on's request headers", True),
    "bad_settings": ("The backend refused a setting in the Neural Render panel", True),
    "bad_frames": ("The frame range selects no frame the passes were rendered for; render the passes again", True),
    "bad_pass_folder": ("The pass folder is missing or incomplete; render the passes again", True),
    "bad_input": ("The backend cannot render this input", True),
    "bad_anchors": ("The render-farm anchors do not fit these settings", True),
    "bad_upload": ("The uploaded pass folder was refused; render the passes again", True),
    "model_missing": ("A model file set in the panel or the preferences does not exist on the backend's computer", True),
    "model_invalid": ("A model file is corrupt or of the wrong kind (e.g. an SDXL file where SD 1.5 is needed)", True),
    "path_refused": ("A folder or file path was refused; use absolute paths without '..'", True),
    "path_outside_roots": ("The backend may not use this path: it lies outside the folders it was allowed to read "
                           "and write (the preferences' Allowed root, or the server's configuration)", True),
    "output_conflict": ("The output folder already holds frames rendered with other settings; choose another "
                        "Output folder, or tick Overwrite frames under Output", False),
    "busy": ("Another neural render is writing to this output folder; cancel it or choose another Output folder",
             False),
    "queue_full": ("The backend's queue is full; try again when a job has finished", False),
    "token": ("The backend refused the access token; copy the token of the server into the preferences' Token "
              "field", False),
    "forbidden": ("The backend refused the request as coming from a web page", False),
    "wrong_host": ("The backend refused the host name in the Backend URL; use the address it listens on", False),
    "too_large": ("The request is larger than the backend accepts (a very long shot or large passes); render "
                  "fewer frames per job or ask the backend's operator to raise its limits", False),
    "not_found": ("The backend does not know this job or frame (it may have been removed)", False),
    "method_not_allowed": ("The backend does not offer this request (the add-on and backend may not match)", True),
    "cancelled": ("The neural render was cancelled; finished frames are kept", False),
    "out_of_memory": ("The GPU ran out of memory; lower Fit within, Batch or use Precision Auto (half precision)",
                      False),
    "internal": ("The backend failed inside neurender; Open Log shows what happened", True),
    UNREACHABLE: ("The neurender backend {detail} cannot be reached; start it, or tick 'Start a local backend' in "
                  "the preferences", True),
    VERSION_MISMATCH: ("The backend and this add-on are different versions; update one so both match", True),
    NOT_NEURENDER: ("The Backend URL answers, but not as a neurender backend; check the URL and port in the "
                    "preferences", False),
    BAD_URL: ("The Backend URL {detail} in the preferences is not a web address; it should look like "
              "http://127.0.0.1:8765", True),
    LOCAL_BACKEND: ("The local backend could not be started; check 'Backend Python environment' in the preferences",
                    True),
    SERVER: ("The backend failed; Open Log shows what happened", True),
    UPLOAD_BROKEN: ("The backend {detail} answers, but it closed the connection while the pass folder was being "
                    "uploaded: it may refuse uploads this large (ask its operator), or it stopped meanwhile", True),
}

BY_STATUS = {400: "bad_request", 401: "token", 403: "forbidden", 404: "not_found", 409: "busy", 413: "too_large",
             421: "wrong_host", 422: "bad_settings", 429: "queue_full", 507: "out_of_memory"}
"""The kind of an answer from a backend too old to send ``error_kind`` (by HTTP status only, never by its words)."""

MAX_DETAIL = 300

_FLAG = r"--[a-z][a-z0-9-]*"
_FLAG_REMEDY = [
    re.compile(r"\s*\([^()]*" + _FLAG + r"[^()]*\)"),  # "(see --root)"
    re.compile(r"[,;]?\s*(?:or|and)?\s*\b(?:use|see|pass|set|add|try|with|create it with|rerun with)\b[^;.()]*"
               + _FLAG + r"[^;.()]*"),  # "; use --overwrite to replace them", "or use --overwrite"
]


def without_flags(detail: str) -> str:
    """The backend's reason without command-line remedies (``(see --root)``, ``or use --overwrite ...``): the
    panel names its own remedy, and an artist has no command line. A flag left elsewhere loses its dashes."""
    for pattern in _FLAG_REMEDY:
        detail = pattern.sub("", detail)
    detail = re.sub(r"`[^`]*" + _FLAG + r"[^`]*`", "the command line", detail)
    detail = re.sub(r"(?<![\w-])--([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", " "), detail)
    return " ".join(detail.split()).strip(" ;,")


def kind_of(body_kind, status: int) -> str:
    """The error kind of an answer: the backend's ``error_kind`` if it sent a known one, else by status."""
    if isinstance(body_kind, str) and body_kind in WORDING:
        return body_kind
    if isinstance(body_kind, str) and body_kind:  # a kind newer than this add-on: the contract says 'internal'
        return "internal"
    return BY_STATUS.get(status, SERVER if status >= 500 else "bad_request")


def word(kind: str, detail: str = "") -> str:
    """The sentence for the artist: the kind's wording, plus the backend's detail where it helps."""
    sentence, with_detail = WORDING.get(kind, WORDING["internal"])
    detail = without_flags(" ".join(str(detail or "").split()))
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL - 1] + "…"
    if "{detail}" in sentence:  # the detail names the thing (a URL): it goes inside the sentence
        return " ".join(sentence.replace("{detail}", detail).split()) + "."
    if with_detail and detail:
        return f"{sentence}: {detail}"
    return sentence + "."


def wrap(text: str, width: int = 60) -> list[str]:
    """Lines of at most ``width`` characters (words kept whole; a longer word is cut), for a panel label."""
    lines: list[str] = []
    line = ""
    for w in text.split():
        while len(w) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(w[:width])
            w = w[width:]
        if not line:
            line = w
        elif len(line) + 1 + len(w) <= width:
            line += " " + w
        else:
            lines.append(line)
            line = w
    if line:
        lines.append(line)
    return lines or [""]
