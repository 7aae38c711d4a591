"""Jobs are records in the .blend (issue 10, defect 6): a file reload, a backend that comes back, re-enabling the
extension and a Blender restart each follow the running job again, and its frames reach the VSE; nothing is
submitted twice."""

from conftest import run_blender_scenario


def test_jobs_survive_reload_restart_reenable_and_a_backend_away(addon_zip, tmp_path, stub):
    stub.step_delay = 0.1
    out = str(tmp_path / "project")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = run_blender_scenario("reattach", tmp_path / "a", addon_zip, timeout=240, url=stub.url, phase="a", out=out)
    assert a["job1_started"] and a["job1_saved_state"] in ("queued", "running")
    # the file opened again in the same process: the job is followed again and imported
    assert a["watchers_after_open"] == 1 and a["job1_done"], a["job1"]
    r1 = a["job1"]["records"][0]
    assert r1["state"] == "done" and r1["strip"] != ""
    assert a["job1"]["strips"] == [["v001", 1, 4, 3]]
    # the backend was away for 4 s mid-job: the artist is told, then the job is followed to its end
    assert a["job2"]["message_while_away"] and "cannot be reached" in a["job2"]["message_while_away"][0]
    assert a["job2_done"] and a["job2"]["records"][1]["state"] == "done"
    assert a["job2"]["strips"] == [["v002", 1, 4, 3]]  # the newer version replaced v001's strip
    # disabled and re-enabled mid-job: the record stayed in the file and the job was followed again
    assert a["job3_started"] and len(a["records_after_enable"]) == 3 and a["records_after_enable"][2][0]
    assert a["watchers_after_enable"] == [a["job3"]["records"][2]["job_id"]] and a["job3_done"], \
        [ln for ln in a["_log"].splitlines() if "reattach" in ln or "Error" in ln or "neurender" in ln[:40]][-30:]
    assert a["job3"]["images"] == ["neurender frame 2 v003 RANDOM WEIGHTS (noise)"]  # the stub renders with random weights

    # records an undo step took away come back with their ids and states; the running job is still followed
    assert [v for v, *_ in a["after_undo"]] == [1, 2, 3, 4] and all(job_id for _, job_id, *_ in a["after_undo"])
    assert a["after_undo"][0][2:] == ["done", True] and a["undo_running_watched"]

    # a Blender restart on the file saved during the long render: it was still running and is followed to its end
    b = run_blender_scenario("reattach", tmp_path / "b", addon_zip, timeout=240, url=stub.url, phase="b", out=out)
    assert b["job4_backend_state_at_open"] in ("queued", "running") and b["job4_saved_state"] in ("queued", "running")
    assert b["watchers"] == [a["job4_id"]] and b["job4_done"], b["job4"]
    assert b["job4"]["records"][3]["state"] == "done" and ["v004", 1, 4, 3] in b["job4"]["strips"]
    # the file saved during the first render: that job finished meanwhile and is imported on open
    assert b["midjob_saved"][0]["state"] in ("queued", "running") and b["midjob_done"]
    assert b["midjob"]["strips"] == [["v001", 1, 4, 3]]
    posts = [p for m, p in stub.requests if m == "POST" and p == "/jobs"]
    assert len(posts) == 4 == len(stub.jobs)  # nothing was submitted again
