"""Progress as the artist sees it follows lockstep sampling: all frames are denoised together, so the steps are
most of the bar and decoding the rest; it never goes backwards; a time estimate appears after the first steps."""

from addon_modules import load

progress = load("progress")


def _snapshots(steps: int, frames: int):
    """The snapshots the real runner reports for one job (runner.py's phases), in order."""
    yield {"state": "queued", "progress": {"phase": "queued", "frames_total": frames}}
    yield {"state": "running", "progress": {"phase": "loading", "frames_total": frames, "steps_total": steps}}
    yield {"state": "running", "progress": {"phase": "controls", "frames_total": frames, "steps_total": steps}}
    for s in range(1, steps + 1):
        yield {"state": "running", "progress": {"phase": "denoise", "step": s, "steps_total": steps,
                                                "frames_total": frames, "frames_done": 0}}
    for f in range(frames + 1):
        yield {"state": "running", "progress": {"phase": "decode", "step": steps, "steps_total": steps,
                                                "frames_total": frames, "frames_done": f}}
    yield {"state": "done", "progress": {"phase": "done", "step": steps, "steps_total": steps,
                                         "frames_total": frames, "frames_done": frames}}


def test_lockstep_progress_passes_half_before_the_first_frame_and_never_goes_back():
    for steps in (4, 20):
        clock = iter(range(1000))
        t = progress.Tracker(clock=lambda: float(next(clock)))
        values, before_first_frame = [], 0.0
        for snap in _snapshots(steps, frames=8):
            values.append(t.update(snap))
            if snap["progress"].get("frames_done", 0) == 0:
                before_first_frame = values[-1]
        assert values == sorted(values) and values[-1] == 1.0
        assert before_first_frame > 0.5, (steps, before_first_frame)
        # at step 15/20 the bar is past 60%, not 9% (the old per-frame formula)
        if steps == 20:
            assert progress.fraction({"phase": "denoise", "step": 15, "steps_total": 20, "frames_total": 8}) > 0.6


def test_out_of_order_and_resumed_snapshots_never_move_the_bar_back():
    t = progress.Tracker(clock=lambda: 0.0)
    t.update({"state": "running", "progress": {"phase": "denoise", "step": 3, "steps_total": 4, "frames_total": 8}})
    high = t.value
    # the old display: 'queued: frame 8/8' then 'running: frame 0/8'; an interrupted job queued again
    for snap in ({"state": "queued", "progress": {"phase": "interrupted", "frames_total": 8}},
                 {"state": "running", "progress": {"phase": "denoise", "step": 1, "steps_total": 4}}):
        assert t.update(snap) == high


def test_time_estimate_after_the_first_steps_and_status_line():
    now = [0.0]
    t = progress.Tracker(clock=lambda: now[0])
    snap = {"state": "running", "progress": {"phase": "denoise", "step": 1, "steps_total": 10, "frames_total": 4}}
    t.update(snap)
    assert t.eta is None  # one step (with the warm-up) says nothing yet
    now[0] = 10.0
    snap["progress"]["step"] = 2
    t.update(snap)
    assert t.eta is not None and 60 < t.eta < 200, t.eta
    assert "Denoising" in t.text and "step 2/10" in t.text and "left" in t.text and "%" in t.text
    assert progress.format_duration(75) == "1 min 15 s" and progress.format_duration(3700) == "1 h 01 min"
