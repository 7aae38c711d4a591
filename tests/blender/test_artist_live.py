"""During and after a neural render, in real Blender (4.5 and 5.0), against the stub backend denoising in lockstep
like the real runner: honest progress, a live preview image, random weights on the result, errors worded by kind."""

import os

from stub_backend import StubBackend


def test_what_the_artist_sees_while_rendering(run_scenario, tmp_path):
    stub = StubBackend(step_delay=0.25, lockstep=True)
    url = stub.start()
    models = tmp_path / "models"
    models.mkdir()
    try:
        r = run_scenario("artist_live", url=url, models=str(models), timeout=240)
    finally:
        stub.stop()
    assert r["connect"] == ["FINISHED"] and r["frame"] == ["FINISHED"]
    snaps = r["snapshots"]
    values = [s["progress"] for s in snaps]
    assert values == sorted(values) and values[-1] == 1.0, values  # monotonic
    before_frames = [s["progress"] for s in snaps if s["frames_on_disk"] == 0]
    assert max(before_frames) > 0.5, snaps  # lockstep: the steps are most of the work, no frame is written yet
    # the live preview (a bpy.data image) changes while the job runs
    previews = [s["preview"] for s in snaps if s["preview"]]
    assert len(set(previews)) >= 2, snaps
    assert r["preview_image"] == [16, 8]
    # frames appear in the strip as they are written, before the job is done
    assert any(s["state"] == "running" and 0 < s["strip_frames"] < 3 for s in snaps), snaps
    assert any(s["eta"] for s in snaps), snaps  # a time estimate after the first steps
    assert any("step" in s["text"] and "/6" in s["text"] for s in snaps)
    assert any(t.startswith("Neural render: Denoising") for t in r["status_bar"]), r["status_bar"]
    assert any(s["device"] == "cpu, float32" for s in snaps)
    # random weights: said in the result message and in red in the panel
    assert "RANDOM WEIGHTS" in r["final_message"] and "Done" in r["final_message"]
    assert any("RANDOM WEIGHTS" in t for t in r["done_red"]), r["done_red"]
    assert r["strip_names"] == ["neurender RANDOM WEIGHTS (noise)"]  # the strip in the sequencer says so too

    # a real checkpoint: no random-weights note; the LoRAs and the reference image reach the backend's settings
    assert r["real"] == ["FINISHED"] and "RANDOM" not in r["real_message"] and r["real_random"] is False
    assert not any("RANDOM" in t for t in r["real_red"])
    # the render buttons report the advice before submitting (the info bar; the terminal in background mode)
    log = r["_log"]
    assert "RANDOM WEIGHTS: no checkpoint is set" in log
    assert r["no_controlnet_job"] == ["FINISHED"] and "No ControlNet: the output ignores your scene" in log
    settings = [j["settings"] for j in stub.jobs.values() if j["settings"]["loras"]][0]
    assert settings["loras"] == [{"path": str(models / "a.safetensors"), "weight": 0.8}]
    assert settings["reference_image"].endswith("ref.png") and os.path.isabs(settings["reference_image"])
    assert [(u["kind"], u["weight"]) for u in settings["controlnets"]] == [("depth", 1.0), ("edges", 0.6)]
    assert settings["device"] == "auto" and settings["dtype"] == "auto"
    # the control images of the current frame, fetched from the backend (GET /jobs/{id}/controls/{kind}/{frame})
    assert r["show_controls"] == ["FINISHED"]
    assert r["control_images"] == {"Neural Render depth": [12, 10], "Neural Render edges": [12, 10]}

    # a missing model: the kind's sentence, wrapped in red, Copy Message / Open Log beside it, no CLI flags
    assert r["missing"][0] == "RuntimeError"
    assert r["missing_error"].startswith("A model file set in the panel or the preferences does not exist")
    assert "missing.safetensors" in r["missing_error"] and "--" not in r["missing_error"]
    assert len(r["error_lines"]) >= 2 and all(len(line) <= 48 for line in r["error_lines"])
    assert "neurender.copy_message" in r["error_buttons"] and "neurender.open_log" in r["error_buttons"]
    assert r["missing_error"] in r["clipboard"] and "missing.safetensors" in r["clipboard"]
    assert "not a web address" in r["bad_url_error"] and "unknown url type" not in r["bad_url_error"]
    assert "not as a neurender backend" in r["html_error"] and "<" not in r["html_error"], r["html_error"]

    assert r["free"] == ["FINISHED"] and stub.freed == 1 and "unloaded its models" in r["free_message"]
    assert r["connect_again"] == ["FINISHED"] and "cn_normal.safetensors does not exist" in r["connect_error"]
