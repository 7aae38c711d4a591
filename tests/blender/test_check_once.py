"""Issue 13 in the add-on: one job's settings are checked once (the pre-flight), then sent as they are."""


def test_settings_checked_once_per_job(run_scenario, stub):
    r = run_scenario("check_once", url=stub.url)
    for action in ("animation", "frame", "hook"):
        assert r[action]["state"] == "done" and r[action]["error"] == "", (action, r[action])
        assert r[action]["checks"] == 1, (action, r[action])
