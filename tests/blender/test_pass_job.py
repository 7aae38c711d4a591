"""The pass render without blocking Blender (defect 8): in the UI it is Blender's own render job (INVOKE_DEFAULT:
progress, Esc) and the add-on finishes from a timer once no render job runs; headless it blocks. bpy cannot open a
window, so the scenario stands in for INVOKE_DEFAULT (runs the same render at once) and for the timer. Before this
change the pass render was a blocking render.render() call on the main thread in the UI too (9.4 s frozen for one
384x256 frame at 32 samples before the pass-only settings)."""


def test_pass_render_as_a_render_job(run_scenario):
    r = run_scenario("pass_job")
    job = r["job"]
    assert [c["mode"] for c in job["calls"]] == ["INVOKE_DEFAULT"] and job["calls"][0]["animation"] is True
    tmp = job["calls"][0]["scene"]
    assert job["done_at_return"] == 0 and tmp in job["scenes_at_return"]  # start() returned before finishing
    assert job["done"] == 1 and job["error"] == "" and job["frames"] == [1, 2, 3]
    assert job["scenes"] == ["Scene"]  # the pass scene is gone afterwards
    assert job["files"] == ["manifest.json", "passes_0001.exr", "passes_0002.exr", "passes_0003.exr"]

    cancelled = r["cancelled"]  # Esc after frame 1: nothing is sent, the scene is removed, no manifest
    assert cancelled["done"] == 1 and cancelled["error_type"] == "PassRenderStopped", cancelled
    assert "after 1 of 3 frames" in cancelled["error"] and cancelled["scenes"] == ["Scene"]
    assert "manifest.json" not in cancelled["files"]

    fallback = r["could_not_start"]  # another render running: the render runs blocking instead
    assert fallback["done"] == 1 and fallback["error"] == "" and fallback["frames"] == [1, 2, 3]
    assert fallback["scenes"] == ["Scene"]

    wait = r["waits_for_render"]  # a render job still running (the artist's Ctrl+F12 ending): started afterwards
    assert wait["calls"] and wait["done_at_return"] == 0 and wait["done"] == 1 and wait["frames"] == [1, 2, 3]

    assert r["then_state_running"] == "rendering passes"
    assert r["then_state"] == "cancelled" and "passes of frames 1-3 could not be rendered" in r["then_error"]
