"""Error reports reach the artist as one clear sentence; progress is reported; cancel stops at the next step."""

import os
import socket

from stub_backend import StubBackend


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_errors_progress_and_cancel(run_scenario, stub, tmp_path):
    stub.step_delay = 0.2  # slow enough for the 0.5 s polling to see steps
    old = StubBackend(protocol=99)
    old_url = old.start()
    try:
        r = run_scenario("errors_cancel", url=stub.url, old_url=old_url,
                         closed_url=f"http://127.0.0.1:{_closed_port()}",
                         missing_model=str(tmp_path / "nowhere" / "sd15.safetensors"))
    finally:
        old.stop()
    assert "cannot be reached" in r["unreachable"]["error"] and r["unreachable_connected"] is False
    assert "protocol 99" in r["mismatch"]["error"] and "speaks 1" in r["mismatch"]["error"]
    assert r["ok"]["result"] == ["FINISHED"] and r["ok_connected"] is True and "0.0-stub" in r["ok_info"]
    assert "Bad settings" in r["bad_settings"]["error"] and "deflicker step 9" in r["bad_settings"]["error"]
    # worded by the server's error_kind (model_missing), not by sniffing the words of its message
    assert "A model file set in the panel or the preferences does not exist" in r["model_missing"]["error"]
    assert "nowhere" in r["model_missing"]["error"]
    assert "passes of frame" in r["no_camera"]["error"] and "Traceback" not in r["no_camera"]["error"], r["no_camera"]
    # nothing was sent for the bad settings nor the cancelled pass render: only the one frame and the cancelled job
    assert len(stub.jobs) == 2
    assert r["render_cancelled"] == {"state": "cancelled", "jobs": 0,
                                     "message": "Render cancelled; nothing was sent to the neural renderer"}

    assert r["frame"]["result"] == ["FINISHED"] and r["frame_state"] == "done"
    import re

    pattern = r"step (\d+)/4, (\d+)/1 frames decoded \((\d+)%\)"
    seen = [tuple(map(int, re.search(pattern, m).groups())) for m in r["progress_messages"] if re.search(pattern, m)]
    assert any(0 < step <= 4 for step, _, _ in seen), seen  # mid-job progress: step and frames
    assert [p for *_, p in seen] == sorted(p for *_, p in seen)  # the percentage never goes back

    job = r["cancelled_job"]
    assert r["cancel"]["result"] == ["FINISHED"]
    assert job["state"] == "cancelled"
    done = job["frames_done"]
    assert len(done) < 3  # 30 steps x 0.2 s per frame: cancel after 0.4 s stops within frame 1 or 2
    for f in done:  # finished frames stay
        assert os.path.isfile(os.path.join(job["out_dir"], f"frame_{f:04d}.png"))
