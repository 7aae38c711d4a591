"""Render hook on an ordinary animation render -> pass folder, job, waiting, VSE strip; re-run replaces our strip."""

import json
import os


def test_hook_renders_submits_waits_and_places_strip(run_scenario, stub):
    r = run_scenario("hook_vse", url=stub.url)
    assert r["status"]["state"] == "done" and r["status"]["error"] == ""
    # the hook never redirects the artist's output nor changes their render settings or view-layer passes
    # (it used to point the output at the pass folder, turn motion blur off and passes on for good)
    assert r["configured"]["format"] == r["own_format"] and r["configured"]["filepath"] == r["own_output"]
    assert r["restored_filepath"] == r["own_output"] and r["restored_format"] == r["own_format"]
    assert r["restored_use_sequencer"] is True and r["motion_blur"] is True
    assert r["layer_passes_after"] == r["layer_passes_before"]
    assert r["still_jobs"] == ""  # F12 with the hook on sends nothing
    # the backend got one job per render, with the scene's settings and range
    jobs = list(stub.jobs.values())
    assert len(jobs) == 2
    assert jobs[0]["settings"]["prompt"] == "a tin robot" and jobs[0]["settings"]["steps"] == 3
    assert jobs[0]["settings"]["frames"] == "1-4" and jobs[1]["settings"]["frames"] == "2-4"
    out_dir = r["status"]["out_dir"]
    root = os.path.dirname(os.path.dirname(out_dir))
    # every render has its own versioned folders: the second render never rewrote the first one's
    assert out_dir == os.path.join(root, "frames", "v001") and r["second_out"] == os.path.join(root, "frames", "v002")
    first_manifest = json.load(open(os.path.join(root, "passes", "v001", "manifest.json")))
    manifest = json.load(open(os.path.join(root, "passes", "v002", "manifest.json")))
    assert [f["frame"] for f in first_manifest["frames"]] == [1, 2, 3, 4]
    assert [f["frame"] for f in manifest["frames"]] == [2, 3, 4]
    assert jobs[0]["out_dir"] == out_dir and jobs[1]["out_dir"] == r["second_out"]
    # the second render wrote real passes although our strip was in the VSE by then (sequencer is off)
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from exr_io import channels
    ch = channels(os.path.join(root, "passes", "v002", "passes_0003.exr"))
    assert "ViewLayer.Depth.Z" in ch and "ViewLayer.Vector.X" in ch

    artist = [s for s in r["first"] if not s["ours"]]
    ours = [s for s in r["first"] if s["ours"]]
    assert len(artist) == 1 and len(ours) == 1
    s = ours[0]
    assert s["channel"] == 2  # channel 1 holds the artist's strip over the same frames
    assert (s["start"], s["end"]) == (1, 5)  # frame_final_end is exclusive
    assert s["elements"] == [f"frame_{f:04d}.png" for f in range(1, 5)]
    assert os.path.normpath(s["directory"]) == os.path.normpath(out_dir)
    for f in range(1, 5):  # the first version's frames stay
        assert os.path.isfile(os.path.join(out_dir, f"frame_{f:04d}.png"))

    # re-run: exactly one neurender strip, on the same channel, now 2-4; the artist's strip untouched
    ours2 = [s for s in r["second"] if s["ours"]]
    artist2 = [s for s in r["second"] if not s["ours"]]
    assert len(ours2) == 1 and artist2 == artist
    assert ours2[0]["channel"] == 2 and (ours2[0]["start"], ours2[0]["end"]) == (2, 5)
    assert ours2[0]["elements"] == [f"frame_{f:04d}.png" for f in range(2, 5)]
    # a missing frame holds the previous image, so the strip keeps the frame numbering
    assert r["gap"] == ["frame_0002.png", "frame_0002.png", "frame_0004.png"]
    # the second run also wrote the optional movie (temporary encoding scene removed again)
    movie = os.path.join(r["second_out"], "neurender.mp4")
    assert os.path.getsize(movie) > 1000
    with open(movie, "rb") as fh:
        assert fh.read(12)[4:8] == b"ftyp"  # an MP4 container
    assert r["scenes"] == ["Scene"]
    assert any("neurender.mp4" in m for m in r["messages"])  # (then the random-weights note of the demo model)
    # the outcome reached the artist (progress is checked in test_errors_cancel with slower jobs)
    assert any(m.startswith("Done: 4 frames on VSE channel 2") for m in r["messages"]), r["messages"]
