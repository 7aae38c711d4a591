"""Every render writes its own versioned folders; a single frame never replaces the animation's frames, manifest or
strip; folders are stored relative to the saved .blend so a moved project still finds them (issue 10, defect 4)."""

import os


def test_single_frame_never_replaces_the_animation_and_paths_are_relative(run_scenario, stub):
    r = run_scenario("versions", url=stub.url)
    assert r["animation"] == ["FINISHED"] and r["frame"] == ["FINISHED"]
    root = r["root"]
    anim = r["after_animation"]
    ours = [s for s in anim["strips"] if s["ours"]]
    assert len(ours) == 1 and (ours[0]["start"], ours[0]["end"]) == (1, 5) and len(ours[0]["elements"]) == 4

    after = r["after_frame"]
    # the animation's frames, passes and manifest are byte-identical after Render This Frame
    assert after["v001_unchanged"], "Render This Frame changed files of the animation's version"
    assert [s for s in after["strips"] if s["ours"]] == ours  # same strip, same 4 frames: no 1-frame strip
    frame_files = [f for f in after["files"] if f not in anim["files"]]
    assert sorted(frame_files) == sorted([os.path.join("frames", "v002", "frame_0002.png"),
                                          os.path.join("passes", "v002", "manifest.json"),
                                          os.path.join("passes", "v002", "passes_0002.exr")]), frame_files
    assert r["v001_manifest_frames"] == [1, 2, 3, 4]
    # the single frame is an image of its own
    images = after["images"]
    assert len(images) == 1 and images[0]["name"].startswith("neurender frame 2 v002") and images[0]["size"] == [64, 48]
    assert images[0]["filepath"] == "//neurender/frames/v002/frame_0002.png"

    # job records: one per render, with their versions and relative folders
    recs = after["records"]
    assert [(x["kind"], x["version"], x["state"], x["range"]) for x in recs] == [
        ("ANIMATION", 1, "done", [1, 4]), ("FRAME", 2, "done", [2, 2])]
    assert recs[0]["out_dir"] == "//neurender/frames/v001" and recs[0]["pass_dir"] == "//neurender/passes/v001"
    assert recs[1]["out_dir"] == "//neurender/frames/v002" and recs[1]["image"] == images[0]["name"]
    assert recs[0]["strip"] == ours[0]["name"] and ours[0]["directory"] == "//neurender/frames/v001/"
    assert ours[0]["version"] == 1
    assert all(x["job_id"] for x in recs) and len(stub.jobs) == 2

    # the Jobs panel lists both, newest first, each with Import and Open Folder (no Cancel: they are done)
    noise = "label:RANDOM WEIGHTS: noise, not an image (no checkpoint set)"  # the stub renders with random weights
    assert r["jobs_panel"] == ["label:v002 frame 2: done", "neurender.job_import", "neurender.job_open_folder", noise,
                               "label:v001 frames 1-4: done", "neurender.job_import", "neurender.job_open_folder", noise]

    moved = r["moved"]  # the project folder moved: the records and the strip resolve to the new place
    assert moved["exists"] and moved["abs_out_dir"].startswith(root.replace(os.sep + "shot" + os.sep,
                                                                            os.sep + "shot_moved" + os.sep))
    assert moved["strip_first_exists"] and moved["image_exists"] == [True]
    assert r["reimport"].startswith("Done: 4 frames on VSE channel")
