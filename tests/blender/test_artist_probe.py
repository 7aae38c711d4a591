"""An artist's own demanding scene used as an artist would (scenarios/artist_probe.py, scene in probe_scene.py).

Each test is one case in its own Blender process against the stub backend. What each finding was: see the docstrings.
"""

import pytest


def _case(run_scenario, stub, case, **kw):
    return run_scenario("artist_probe", url=stub.url, case=case, timeout=120, **kw)


def test_every_action_leaves_the_artists_scene_and_files_alone(run_scenario, stub):
    r = _case(run_scenario, stub, "actions")
    for name in ("connect", "render_frame", "render_animation", "F12 hook off", "Ctrl+F12 hook off", "F12 hook on",
                 "Ctrl+F12 hook on", "keyframes restyle", "window", "range 12-13", "look save", "look apply",
                 "open output", "wrong model path", "backend not running", "output not writable", "disable + enable"):
        a = r[name]
        assert a["diffs"] == [], f"{name} changed the artist's scene or files: {a['diffs']}"
        assert a["hook"] is (name in ("F12 hook on", "Ctrl+F12 hook on")), f"{name} changed the render hook"
    # only the artist's own renders write the artist's own files, exactly where their settings say
    assert r["F12 hook off"]["artist_written"] == r["F12 hook on"]["artist_written"] == ["beauty/sh010_.exr"]
    frames = [f"beauty/sh010_{f:04d}.exr" for f in range(11, 15)]
    assert r["Ctrl+F12 hook off"]["artist_written"] == r["Ctrl+F12 hook on"]["artist_written"] == frames
    for name in ("connect", "render_frame", "render_animation", "keyframes restyle", "range 12-13", "look apply",
                 "wrong model path", "backend not running", "output not writable", "disable + enable"):
        assert r[name]["artist_written"] == [], name
    # a still render sends nothing, an animation render with the hook does; without it nothing is sent
    for name in ("F12 hook off", "F12 hook on", "Ctrl+F12 hook off"):
        assert r[name]["new_files"] == [] and r[name]["message"] == r[name]["error"] == "", (name, r[name])
    assert r["Ctrl+F12 hook on"]["state"] == "done" and r["Ctrl+F12 hook on"]["message"].startswith("Done")
    assert any(f.endswith("frame_0014.png") for f in r["Ctrl+F12 hook on"]["all_files"])
    # the passes describe the artist's shot: 23.976 fps, 96 x 40 (192 x 80 at 50 %), frames 11-14
    assert r["manifest"] == {"fps": pytest.approx(24 / 1.001), "size": [96, 40], "range": [11, 14]}
    assert r["range 12-13"]["state"] == "done" and "2 frames" in r["range 12-13"]["message"]
    # refusals: one sentence saying what to fix, nothing rendered, no traceback
    for name, words in (("wrong model path", "missing.safetensors does not exist"),
                        ("backend not running", "cannot be reached"),
                        ("output not writable", "is a file, not a folder")):
        a = r[name]
        assert a["result"][0] == "REFUSED" and words in a["error"], (name, a)
        assert a["new_files"] == [], f"{name}: something was rendered before the refusal: {a['new_files']}"
        nospace = words.replace(" ", "")  # long paths are cut over several panel lines
        assert any(nospace in t.replace(" ", "") for t in a["red"]), f"{name}: the panel does not show it: {a['red']}"
        assert "Traceback" not in a["error"]
    assert r["reenabled_shot"] is True


def test_panel_says_random_weights_once_and_where_the_files_go(run_scenario, stub):
    """Findings: after a render without a checkpoint the panel said RANDOM WEIGHTS three times (the advice box, the
    result box and the Done message right under it); the Output box showed only '//neurender/', never where the
    files go (for an unsaved .blend they go to the extension's user folder, which nothing said); and a 50 % preview
    resolution sent 96 x 40 frames to SD 1.5 without a word (only sizes above 1024 were advised)."""
    r = _case(run_scenario, stub, "panel")
    assert "RANDOM WEIGHTS" in r["message"]  # the status line / report keeps it
    assert r["random_weights_said"] == 1
    assert f"Writes to {r['saved_root']}".replace(" ", "") in r["saved_labels"].replace(" ", "")
    unsaved = r["unsaved_labels"].replace(" ", "")
    assert f"Writes to {r['unsaved_root']}".replace(" ", "") in unsaved
    assert "notsavedyet" in unsaved
    assert r["unsaved_created_by_drawing"] is False  # drawing creates no folder
    # a 50 % preview resolution gives 96 x 40 frames: SD 1.5 makes mush of that, and the panel now says so
    small = "96 x 40 is small for SD 1.5"
    assert any(small in t for t in r["panel_texts"]), r["panel_texts"]
    assert not any("is small for SD 1.5" in t for t in r["panel_texts_full_size"])


def test_a_second_render_does_not_show_the_previous_jobs_progress(run_scenario, stub):
    """Finding: while a second render was checked and its passes rendered, the panel showed the finished job's bar
    ('100%') and line ('Denoising, step 2/2, 4/4 frames decoded (100%)'); once submitted, a 0% bar under that same
    old line."""
    seen = _case(run_scenario, stub, "second_render_panel")["seen"]
    for when in ("checking", "submitting"):
        assert seen[when]["progress"] == [], (when, seen[when])
        assert not any("step 2/2" in t or "frames decoded" in t for t in seen[when]["labels"]), (when, seen[when])
        assert not any(t.startswith(("Rendering on", "Preview:")) for t in seen[when]["labels"]), (when, seen[when])
    assert any(t.startswith("Submitting frames 11-14") for t in seen["submitting"]["labels"]), seen["submitting"]


def test_an_upload_cut_off_by_the_backend_is_not_called_unreachable(tmp_path):
    """Finding: when a backend (another computer, 'No (upload)') closed the connection during the pass-folder upload
    - as a server does when it refuses an upload early - the artist read 'The neurender backend ... cannot be
    reached; start it, or tick Start a local backend', although it had just answered."""
    import os
    import socket
    import threading

    from addon_modules import load

    client, messages = load("client"), load("messages")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                head = conn.recv(4096)
                if head.startswith(b"GET"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                                 b"Connection: close\r\n\r\n[]")
                # a POST: closed after its first bytes, without an answer

    threading.Thread(target=serve, daemon=True).start()
    zip_path = tmp_path / "passes.zip"
    zip_path.write_bytes(os.urandom(4 << 20))
    try:
        c = client.Client(f"http://127.0.0.1:{port}", timeout=10)
        try:
            c.submit_upload(str(zip_path), {"prompt": "x"})
        except client.BackendError as exc:
            err = exc
        else:
            raise AssertionError("the cut-off upload did not fail")
    finally:
        srv.close()
    assert err.kind == messages.UPLOAD_BROKEN, (err.kind, str(err))
    assert "cannot be reached" not in str(err) and "Start a local backend" not in str(err)
    assert f"127.0.0.1:{port}" in str(err) and "upload" in str(err)
    assert "broke off after" in err.detail  # Copy Message keeps how far it got


def test_copy_message_never_appends_the_previous_errors_detail(run_scenario, stub):
    """Finding: Copy Message (the text for a bug report) appended the PREVIOUS error's backend detail to a new error
    that has none of its own (a pre-flight refusal: the output folder under a file got 'Details: the upload to ...
    broke off ...' from the error before)."""
    r = _case(run_scenario, stub, "copy_message")
    assert r["first_detail"] and r["first_error"]
    assert r["copied"] == r["second_error"], r["copied"]


def test_one_exact_side_keeps_the_renders_aspect(run_scenario, stub):
    """Finding: Advanced > Width 512 with Height 0 on a 2.4:1 shot sent 512 x 40 (the width exact, the height from
    Fit within of the 96 x 40 render): squashed frames whose strip cannot fill the canvas."""
    sizes = _case(run_scenario, stub, "sizes")["sizes"]
    assert sizes["0x0"]["sent"] == [96, 40]
    assert sizes["512x0"]["sent"] == [512, 216]  # 512 / 2.4 = 213.3 -> 216
    assert sizes["0x216"]["sent"] == [520, 216]  # 216 * 2.4 = 518.4 -> 520
    assert sizes["512x256"]["sent"] == [512, 256]  # both set: exactly as asked
    for key, v in sizes.items():
        assert v["label"] == [f"Frames of {v['sent'][0]} x {v['sent'][1]} pixels"], (key, v)



@pytest.fixture
def slow_stub():
    from stub_backend import StubBackend

    backend = StubBackend(lockstep=True, step_delay=0.2)
    backend.url = backend.start()
    yield backend
    backend.stop()


def test_cancel_mid_job_says_so_and_adds_nothing(run_scenario, slow_stub):
    """Cancel during denoising (lockstep: no frame is written before the last step): the job ends cancelled, the
    panel says so and that no frame was kept, Cancel greys out, no strip is added, the artist's scene is untouched."""
    r = _case(run_scenario, slow_stub, "cancel")
    a = r["cancel mid-job"]
    assert r["asked"] == [True]
    assert a["state"] == "cancelled" and a["diffs"] == [] and a["error"] == ""
    assert a["message"].startswith("Cancelled; 0 finished frames kept"), a["message"]
    assert not any(f.startswith("frames") and f.endswith(".png") and "frame_" in f for f in a["new_files"])
    assert r["strips"] == [] and r["cancel_enabled"] is False
    assert 0.05 < r["progress"] < 1.0  # the bar stops where the job stopped
    # the next render's first snapshots do not show the cancelled job's preview step ("Preview ... (step 5)")
    for snap in r["next_job_first_snapshots"]:
        assert snap["preview_step"] <= snap["step"], r["next_job_first_snapshots"]


def test_a_second_shot_in_the_same_blend_never_replaces_the_first_shots_frames(run_scenario, stub):
    """Finding (main before the versioned folders): two scenes of one .blend share the default Output
    (//neurender/), so Render Animation in sh020 rewrote the frames that sh010's strip shows."""
    r = _case(run_scenario, stub, "two_scenes")
    assert r["sh020_strips"] == 1
    assert r["sh010_strip_frames"] == [11, 14, 4]
    assert r["sh010_shown_after"] == r["sh010_shown_before"], "sh010's strip now shows other frames"
    # the panel's status follows the latest job: looking at sh010 after sh020's render, it says whose it is
    note = "The render below is of the scene 'sh020', not this one"
    assert note in " ".join(r["sh010_panel"]), r["sh010_panel"]
    assert not any("of the scene" in t for t in r["sh020_panel"] + r["sh010_panel_after_sh010"])


def test_save_mid_job_reload_second_render_and_cancel_on_the_artists_scene(run_scenario, slow_stub):
    """The UI's threads (NEURENDER_THREADED): a render saved mid-job and the file opened again is followed to its end
    and imported; a second and a third render while one runs are queued behind it, the running one is cancelled,
    the other completes; the artist's scene and own strips are identical throughout (evaluated at its frame)."""
    r = _case(run_scenario, slow_stub, "lifecycle")
    assert r["started"] and r["reloaded_done"], r
    assert r["after_reload"] == [] and r["after_second"] == []
    assert r["strips_after_reload"] == [("neurender RANDOM WEIGHTS (noise)", 4)] or \
        r["strips_after_reload"] == [["neurender RANDOM WEIGHTS (noise)", 4]]
    assert r["first_cancel"] is True and r["both_final"] is True
    states = [s for s, _imported, _v in r["final_records"]]
    assert states == ["done", "cancelled", "done"], r["final_records"]
    assert [v for *_, v in r["final_records"]] == [1, 2, 3]
    assert r["artist_strips"] == ["grade_note", "slate"]


def test_a_missing_local_backend_environment_names_the_preference_not_a_command(run_scenario, stub):
    """Finding: 'Start a local backend' with a Backend Python environment that holds no backend said 'No neurender
    command in the Python environment ...; expected .../bin/neurender. Install the backend there with: pip install -e
    <neurender repo>' - a command line for the artist, and not the name of the preference to fix."""
    r = _case(run_scenario, stub, "local_backend_missing")
    for name in ("connect", "render_animation"):
        a = r[name]
        assert a["result"][0] == "REFUSED" and a["new_files"] == [] and a["diffs"] == [], (name, a)
        assert "Backend Python environment" in a["error"], (name, a["error"])
        assert "pip install" not in a["error"], (name, a["error"])


def test_camera_cuts_by_markers_reach_the_passes(run_scenario, stub):
    """Finding: a camera cut by a timeline marker (marker.camera) was not copied to the temporary pass scene, so
    every pass frame and every manifest camera came from the camera active when the render started, while the
    artist's own render cuts to the second camera."""
    r = _case(run_scenario, stub, "camera_cuts")
    assert r["artist_camera_per_frame"] == {"11": "ShotCam", "12": "ShotCam", "13": "CloseUp", "14": "CloseUp"}
    assert r["render_animation"]["diffs"] == []
    for f in ("11", "12", "13", "14"):
        got, want = sum(r["cameras"][f], []), sum(r["expected"][f], [])
        assert got == pytest.approx(want, abs=1e-3), f"frame {f}: the passes use the wrong camera"


def test_passes_are_pinhole_with_the_artists_depth_of_field(run_scenario, stub):
    """Finding: the pass-only render (1 sample) used the artist's camera with its depth of field, so every pixel
    of the depth/normal/vector passes is one random sample over the lens aperture: out-of-focus depth off by ~10 %,
    object edges jittering (the manifest describes a pinhole camera; the ControlNets and the deflicker read
    these passes as exact)."""
    r = _case(run_scenario, stub, "dof")
    assert r["ids_left"] is True  # the pass cameras are removed with the pass scene
    assert r["artist_dof"] == [True, 0.5, 1.0]  # the artist's camera keeps its depth of field
    assert r["background_mismatch"] < 0.002, r
    assert r["depth_rel_err_median"] < 1e-3, r


def test_hook_sends_the_shot_when_overwrite_is_off_and_the_frames_exist(run_scenario, stub):
    """Finding: with the hook on and the artist's Output > Overwrite off (frames already on disk), Blender skips
    every frame and fires no render_write, so the hook sent nothing and said nothing (no message, no error)."""
    r = _case(run_scenario, stub, "hook_overwrite_off")
    a = r["Ctrl+F12 again, Overwrite off"]
    assert a["diffs"] == [] and a["artist_written"] == []
    told = a["message"] or a["error"]
    assert a["new_files"] or told, "the hooked Ctrl+F12 sent nothing and the artist was told nothing"
    assert any(f.endswith("frame_0014.png") for f in a["new_files"]), (
        f"the artist's whole range is on disk, yet no neural render was made; the panel said {told!r}")


def test_the_neural_strip_does_not_change_the_artists_sequencer_render(run_scenario, stub):
    """Finding: when the artist's output goes through their own sequencer edit (Post Processing > Sequencer on, a
    slate and a colour note over the scene strip), the neural result strip is placed on the channel above and is
    not muted, so the artist's next F12 / Ctrl+F12 beauty output shows the neural frames over their edit."""
    r = _case(run_scenario, stub, "sequencer_output")
    assert len(r["our_strips"]) == 1
    assert r["max_pixel_change"] < 1e-6, (
        f"the artist's own render changed after the neural render (strip {r['our_strips']}): "
        f"max pixel change {r['max_pixel_change']}")


def test_every_random_weights_result_says_so(run_scenario, stub):
    """Finding: without a checkpoint, the animation's strip is named 'neurender RANDOM WEIGHTS (noise)', but the
    single frame's result image is plain 'neurender frame 12 v002' and the Jobs panel lists both records as
    'done' without a word: an artist who opens the image or reads the Jobs list takes noise for a result."""
    r = _case(run_scenario, stub, "random_results")
    assert r["strips"] and "RANDOM WEIGHTS" in r["strips"][0][0]
    assert r["images"] and all("RANDOM WEIGHTS" in name for name, _path in r["images"]), r["images"]
    said = [text for text, alert in r["jobs_panel"] if "RANDOM WEIGHTS" in text and alert]
    assert len(said) >= 2, f"the Jobs panel does not say both results are noise: {r['jobs_panel']}"
