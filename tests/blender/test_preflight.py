"""Pre-flight (defect 8): with no backend, a wrong URL, an old backend, a missing model, an unwritable output folder,
no camera, an absurd frame range or resolution, bad settings or a local backend that cannot start, Render This
Frame, Render Animation and the render hook each report one sentence naming the problem and render no pass file
and send no job. On the previous code the pass render ran first (pass files written) and only then failed."""

import socket

import pytest

from stub_backend import StubBackend


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def result(addon_zip, tmp_path_factory):
    from conftest import run_blender_scenario

    tmp = tmp_path_factory.mktemp("preflight")
    stub, old = StubBackend(), StubBackend(protocol=99)
    url, old_url = stub.start(), old.start()
    try:
        r = run_blender_scenario("preflight", tmp, addon_zip, 240, url=url, old_url=old_url,
                                 closed_url=f"http://127.0.0.1:{_closed_port()}",
                                 missing_model=str(tmp / "nowhere" / "sd15.safetensors"), env=str(tmp / "no-env"),
                                 elsewhere=str(tmp / "elsewhere"))
    finally:
        stub.stop()
        old.stop()
    r["jobs"] = len(stub.jobs)
    return r


EXPECTED = {
    "unreachable": ["cannot be reached"],
    "mismatch": ["protocol 99", "speaks 1"],
    "model_missing": ["model file", "does not exist", "checkpoint", "nowhere"],
    "controlnet_missing": ["model file", "does not exist", "ControlNet", "sd15.safetensors.cn"],
    "output_unwritable": ["output folder", "cannot be written", "is a file"],
    "no_camera": ["no active camera"],
    "too_many_frames": ["20001 frames", "1 to 10000"],
    "too_small": ["render size 3x2", "8 to 2048"],
    "bad_settings": ["Bad settings", "deflicker step 9"],
    "local_not_startable": ["No neurender command", "no-env"],
    "outside_allowed_root": ["outside the folders it was allowed", "is not inside the Allowed root", "elsewhere"],
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_first_failure_is_one_sentence_and_nothing_is_rendered(result, case):
    runs = result[case]
    actions = {"too_many_frames": {"animation"}, "no_camera": {"frame", "animation"}}
    assert set(runs) == actions.get(case, {"frame", "animation", "hook"})
    for action, run in runs.items():
        for words in EXPECTED[case]:
            assert words in run["error"], (case, action, run)
        assert "Traceback" not in run["error"] and "\n" not in run["error"], (case, action, run["error"])
        assert run["passes"] == [], (case, action, run)  # nothing rendered


def test_nothing_sent_and_a_good_shot_still_renders(result):
    assert result["jobs"] == 1  # only the final good frame reached the backend
    ok = result["ok"]
    assert ok["error"] == "" and ok["state"] == "done", ok
    assert len(ok["passes"]) == 1 and ok["passes"][0].endswith("passes_0001.exr"), ok
