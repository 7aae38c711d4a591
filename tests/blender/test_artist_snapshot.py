"""The artist's scene is identical (generic RNA walk) after F12, Ctrl+F12 and the panel's buttons, hook on, and after
the job actions: import, open folder, reattach, disabling + re-enabling the extension mid-job, cancel."""


def test_every_scene_setting_is_identical_after_each_neurender_action(run_scenario, stub):
    r = run_scenario("artist_snapshot", url=stub.url, timeout=300)
    for action, diffs in r["changes"].items():
        if action != "refused":
            assert diffs == [], f"{action} changed the artist's scene: {diffs[:10]}"
    assert r["hook_after_ops"] == [True, True]  # the panel's buttons never change the hook setting
    assert r["scenes"] == ["Scene"] or len(r["scenes"]) == 1  # the temporary pass scene is gone
    # the job actions ran for real: a job followed across reattach and re-enabling, then cancelled from its row
    for action in ("job_import", "job_open_folder", "reattach", "disable + enable", "job_cancel"):
        assert action in r["changes"], action
    assert r["job_actions"]["running"] and r["job_actions"]["cancelled"], r["job_actions"]
