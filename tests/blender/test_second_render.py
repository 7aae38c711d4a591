"""A second render while one runs (issue 10, defect 5): it never touches the running job's pass files, the first
job keeps its watcher and reaches the VSE, the second is queued behind it, and the first stays cancellable."""

import os


def test_second_render_is_queued_and_the_first_is_kept(run_scenario, stub):
    stub.step_delay = 0.1
    r = run_scenario("second_render", url=stub.url, timeout=240)
    assert r["first_running"]
    # the second Render Animation rendered into its own folder: the first job's pass files are byte-identical
    assert r["second_op"] == ["FINISHED"] and r["first_passes_untouched"]
    assert r["second_status"]["error"] == "", r["second_status"]
    p1 = r["part1"]
    assert r["both_done"], p1
    first, second = p1["records"][:2]
    assert first["job_id"] == p1["first_job"] and sorted(r["watchers"]) == sorted([first["job_id"], second["job_id"]])
    assert p1["status_job"] == second["job_id"] and p1["status_state"] == "done"
    # the first job was followed to its end and imported (its strip, then replaced by the newer version's)
    assert first["state"] == "done" and first["imported"]
    assert any(m.startswith("Done: 3 frames") and "v001)" in m for m in p1["messages"]), p1["messages"]
    assert p1["strips"] == [["v002", 1, 4]]
    for rec in (first, second):
        assert sorted(os.listdir(rec["out_dir"])) == [f"frame_{f:04d}.png" for f in (1, 2, 3)]
    jobs = list(stub.jobs.values())  # the backend queued the second job behind the first (no 409)
    assert [j["state"] for j in jobs[:2]] == ["done", "done"]

    # Render This Frame while an animation runs: queued; the animation is cancelled from its Jobs row
    assert "part2_error" not in r, r.get("part2_error")
    assert r["frame_op"] == ["FINISHED"] and r["cancel_poll_current"] and r["cancel_op"] == ["FINISHED"]
    assert r["part2_done"], r["part2"]
    third, fourth = r["part2"]["records"][2:]
    assert third["state"] == "cancelled" and fourth["state"] == "done" and fourth["image"].startswith("neurender frame 2 v004")
    assert r["part2"]["strips"] == [["v002", 1, 4]]  # the cancelled job and the frame leave the strip alone
    assert len(os.listdir(third["out_dir"])) < 3
