"""What the artist reads (no bpy needed for the wording itself; the panel scenarios show it in Blender):
every error kind of the contract is worded once, for the artist, without command-line flags; answers that are not
neurender's and URLs that are not web addresses are clean sentences; long messages wrap."""

import http.server
import re
import threading

import pytest

from addon_modules import load

client = load("client")
messages = load("messages")
contract = load("neurender_contract")

FLAG = re.compile(r"(?<![\w-])--[a-z]")
# details as the real backend words them, some with command-line remedies the panel must not show
DETAILS = {
    "path_outside_roots": "pass_dir '/srv/x' lies outside the folders this server may use (see --root)",
    "output_conflict": "/out already holds frames rendered with other settings; render into another folder "
                       "or use --overwrite to replace them",
    "bad_anchors": "anchors folder /a has no anchors.json; create it with `neurender anchors PASS_DIR --out /a`",
}


@pytest.mark.parametrize("kind", [k.value for k in contract.ErrorKind])
def test_every_error_kind_of_the_contract_has_its_own_sentence_without_flags(kind):
    assert kind in messages.WORDING, f"ErrorKind {kind!r} has no wording in messages.py"
    detail = DETAILS.get(kind, "something --with-a-flag went wrong")
    status = contract.ERROR_STATUS[contract.ErrorKind(kind)]
    assert messages.kind_of(kind, status) == kind
    text = messages.word(kind, detail)
    assert text and text[0].isupper() and text.endswith((".", "…")) or ":" in text
    assert not FLAG.search(text), text
    assert "neurender serve" not in text and "Traceback" not in text
    # the sentence differs from every other kind's (worded once each, not one generic sentence)
    others = {messages.word(k.value) for k in contract.ErrorKind if k.value != kind}
    assert messages.word(kind) not in others


def test_path_outside_roots_is_not_called_a_token_problem():
    text = messages.word("path_outside_roots", DETAILS["path_outside_roots"])
    assert "token" not in text.lower() and "outside the folders" in text and "/srv/x" in text
    assert "--root" not in text and "(see" not in text
    conflict = messages.word("output_conflict", DETAILS["output_conflict"])
    assert "Overwrite frames" in conflict and "--overwrite" not in conflict


def test_unknown_kind_is_internal_and_old_backends_are_classified_by_status_only():
    assert messages.kind_of("a_kind_from_the_future", 422) == "internal"
    assert messages.kind_of(None, 401) == "token"
    # an old backend's words never decide the kind: "model ... not found" with 422 is still bad settings
    assert messages.kind_of(None, 422) == "bad_settings"


class _HtmlServer(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        page = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>" + b"x" * 500
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)


def test_a_web_server_that_is_not_neurender_and_a_url_without_http():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HtmlServer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(client.BackendError) as err:
            client.Client(f"http://127.0.0.1:{srv.server_address[1]}").check_version()
    finally:
        srv.shutdown()
        srv.server_close()
    text = str(err.value)
    assert err.value.kind == messages.NOT_NEURENDER
    assert "<" not in text and "html" not in text.lower() and len(text) < 160, text
    assert "not as a neurender backend" in text
    for url in ("127.0.0.1:8765", "localhost:8765", "ftp://example.com"):
        with pytest.raises(client.BackendError) as err:
            client.Client(url)
        assert err.value.kind == messages.BAD_URL
        assert "unknown url type" not in str(err.value) and "http://127.0.0.1:8765" in str(err.value)
        assert repr(url) in str(err.value)


def test_long_messages_wrap_into_panel_lines_and_keep_every_word():
    text = messages.word("path_outside_roots", "pass_dir '/very/long/" + "sub/" * 30 + "folder' lies outside")
    lines = messages.wrap(text, 50)
    assert len(lines) > 3 and all(len(line) <= 50 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    assert messages.wrap("", 50) == [""]
