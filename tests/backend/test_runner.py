"""The job runner and the `neurender` command line end to end on synthetic pass folders and a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neurender.cli import main
from neurender.contract import ContractError, ControlNetUnit, ErrorKind, RenderSettings
from neurender.errors import InputError, JobCancelled, ModelLoadError, PassFolderError
from neurender.runner import CancelToken, JobSpec, run_render
from support.synthetic_passes import write_synthetic_pass_folder

W, H = 64, 48


@pytest.fixture(scope="module")
def passes(tmp_path_factory):
    path = tmp_path_factory.mktemp("passes")
    write_synthetic_pass_folder(path, frames=5, width=W, height=H, motion=(2.0, 0.0))
    return path


def _settings(tiny, **kw) -> RenderSettings:
    base = dict(
        prompt="a wooden toy",
        steps=3,
        model=str(tiny.model),
        controlnets=[ControlNetUnit(kind="depth", model=str(tiny.controlnets["depth"])),
                     ControlNetUnit(kind="edges", model=str(tiny.controlnets["edges"]), weight=0.5)],
        consistency="first+prev",
        batch_size=2,
    )
    base.update(kw)
    return RenderSettings(**base)


def _frames(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("frame_*.png"))}


def test_render_writes_every_frame_atomically_and_reports_progress(tiny_model_dir, passes, tmp_path):
    seen = []
    result = run_render(JobSpec(passes, tmp_path / "out", _settings(tiny_model_dir), save_controls=tmp_path / "ctl"),
                        progress=seen.append)
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_file())
    assert names == [f"frame_{f:04d}.png" for f in range(1, 6)]  # no temporaries left behind
    assert result.frames_written == [1, 2, 3, 4, 5]
    assert result.random_model  # the tiny test model carries the random-weights marker
    with Image.open(tmp_path / "out" / "frame_0003.png") as im:
        assert im.size == (W, H)
    steps = [p.step for p in seen if p.phase == "denoise"]
    assert steps[-1] == 3 and steps == sorted(steps)
    assert seen[-1].phase == "done" and seen[-1].frames_done == 5
    saved = sorted(p.name for p in (tmp_path / "ctl").iterdir())
    assert "depth_0001.png" in saved and "edges_0005.png" in saved
    assert not (tmp_path / "out" / ".neurender" / "state.pt").exists()  # checkpoint removed when done


def test_rerun_skips_finished_frames_and_overwrite_renders_again(tiny_model_dir, passes, tmp_path):
    out = tmp_path / "out"
    run_render(JobSpec(passes, out, _settings(tiny_model_dir)))
    before = _frames(out)
    again = run_render(JobSpec(passes, out, _settings(tiny_model_dir)))
    assert again.frames_written == [] and again.frames_skipped == [1, 2, 3, 4, 5]
    # a deleted and a corrupt frame are rendered again, identical to the first run; the others are untouched
    (out / "frame_0002.png").unlink()
    (out / "frame_0004.png").write_bytes(b"\x89PNG truncated")
    mtime = (out / "frame_0001.png").stat().st_mtime_ns
    partial = run_render(JobSpec(passes, out, _settings(tiny_model_dir)))
    assert partial.frames_written == [2, 4]
    assert _frames(out) == before
    assert (out / "frame_0001.png").stat().st_mtime_ns == mtime
    forced = run_render(JobSpec(passes, out, _settings(tiny_model_dir, overwrite=True)))
    assert forced.frames_written == [1, 2, 3, 4, 5]


def test_cancel_keeps_state_and_a_rerun_resumes_to_the_same_frames(tiny_model_dir, passes, tmp_path):
    reference = tmp_path / "ref"
    run_render(JobSpec(passes, reference, _settings(tiny_model_dir, steps=4)))
    out = tmp_path / "out"
    token = CancelToken()

    def cancel_after_two(p):
        if p.phase == "denoise" and p.step == 2:
            token.cancel()

    with pytest.raises(JobCancelled):
        run_render(JobSpec(passes, out, _settings(tiny_model_dir, steps=4)), progress=cancel_after_two, cancel=token)
    assert (out / ".neurender" / "state.pt").exists() and not list(out.glob("frame_*.png"))
    steps = []
    run_render(JobSpec(passes, out, _settings(tiny_model_dir, steps=4)),
               progress=lambda p: steps.append(p.step) if p.phase == "denoise" else None)
    assert 1 not in steps and 2 not in steps  # resumed after step 2
    assert _frames(out) == _frames(reference)


def test_frame_subset_and_non_square_size(tiny_model_dir, passes, tmp_path):
    result = run_render(JobSpec(passes, tmp_path, _settings(tiny_model_dir, frames="2-3", width=80, height=40)))
    assert result.frames_written == [2, 3]
    with Image.open(tmp_path / "frame_0002.png") as im:
        assert im.size == (80, 40)


def test_bad_inputs_fail_before_any_work_with_clear_errors(tiny_model_dir, passes, tmp_path):
    with pytest.raises(PassFolderError):
        run_render(JobSpec(tmp_path / "nope", tmp_path / "o", _settings(tiny_model_dir)))
    with pytest.raises(ModelLoadError, match="missing-model"):
        run_render(JobSpec(passes, tmp_path / "o", _settings(tiny_model_dir, model=str(tmp_path / "missing-model"))))
    with pytest.raises(InputError, match="outside|range"):
        run_render(JobSpec(passes, tmp_path / "o", _settings(tiny_model_dir, frames="40-50")))
    from neurender.models.cache import PipelineCache

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded for a job with bad input")

    with pytest.raises(InputError, match="no-such-ref.png"):
        run_render(JobSpec(passes, tmp_path / "o", _settings(tiny_model_dir, reference_image=str(tmp_path / "no-such-ref.png"))),
                   pipelines=PipelineCache(loader=no_load))
    assert not list((tmp_path / "o").glob("frame_*.png")) if (tmp_path / "o").exists() else True


def test_cli_render_exit_codes_and_json_progress(tiny_model_dir, passes, tmp_path, capsys, caplog):
    base = ["render", str(passes), "--out", str(tmp_path / "out"), "--model", str(tiny_model_dir.model),
            "--controlnet", f"depth={tiny_model_dir.controlnets['depth']}@0.8:0:0.9", "--prompt", "toy", "--steps", "2",
            "--progress", "json", "--consistency", "first"]
    assert main(base) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    assert any(r["event"] == "progress" and r["phase"] == "denoise" for r in lines)
    assert json.loads(captured.out.strip().splitlines()[-1])["written"] == [1, 2, 3, 4, 5]
    assert main(base) == 0  # idempotent: nothing to do
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"] == [1, 2, 3, 4, 5]
    assert main(base + ["--steps", "0"]) == 2
    assert main(["render", str(tmp_path / "missing"), "--out", str(tmp_path / "o2"), "--steps", "2"]) == 2
    assert main(base[:5] + [str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "o3")]) == 2
    assert "bad.safetensors" in caplog.text and "expected" in caplog.text


def test_cli_settings_file_and_flags_override(tiny_model_dir, passes, tmp_path):
    settings = _settings(tiny_model_dir, steps=2).to_dict()
    path = tmp_path / "shot.json"
    path.write_text(json.dumps(settings))
    assert main(["render", str(passes), "--out", str(tmp_path / "out"), "--settings", str(path), "--frames", "1-2",
                 "--progress", "none"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("frame_*.png")) == ["frame_0001.png", "frame_0002.png"]
    path.write_text(json.dumps({**settings, "bogus": 1}))
    assert main(["render", str(passes), "--out", str(tmp_path / "o"), "--settings", str(path)]) == 2
    path.write_text(json.dumps([settings]))  # valid JSON, but not an object: bad input, not an internal error
    assert main(["render", str(passes), "--out", str(tmp_path / "o"), "--settings", str(path)]) == 2


def test_demo_mode_without_model_warns_loudly(passes, tmp_path, monkeypatch):
    monkeypatch.setenv("NEURENDER_CACHE", str(tmp_path / "cache"))
    env = dict(os.environ, NEURENDER_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "neurender.cli", "render", str(passes), "--out", str(tmp_path / "out"), "--steps", "1",
         "--frames", "1-2", "--progress", "none"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM-WEIGHT" in proc.stderr
    frames = sorted((tmp_path / "out").glob("frame_*.png"))
    assert len(frames) == 2
    assert np.asarray(Image.open(frames[0])).std() > 0  # something was rendered, not a blank image


def test_cli_flags_reach_the_settings_object():
    from neurender.cli import build_parser, settings_from_args

    args = build_parser().parse_args(
        ["render", "p", "--out", "o", "--steps", "10", "--deflicker-steps", "2,5", "--deflicker-space", "latent",
         "--post-deflicker", "--deflicker-window", "4", "--consistency", "window", "--window-size", "6",
         "--controlnet", "normal=/m/cn@0.5:0.1:0.9", "--lora", "/m/l.safetensors@0.7", "--no-fixed-noise"])
    s = settings_from_args(args)
    assert s.deflicker_steps == [2, 5] and s.deflicker_space == "latent" and s.post_deflicker
    assert s.deflicker_window == 4 and s.consistency == "window" and s.window_size == 6 and not s.fixed_noise
    assert (s.controlnets[0].kind, s.controlnets[0].weight, s.controlnets[0].guidance_start) == ("normal", 0.5, 0.1)
    assert s.loras[0].weight == 0.7
    # a refused setting is the artist's mistake: a ContractError (exit code 2), never an internal error
    with pytest.raises(ContractError, match="deflicker step 12") as info:
        settings_from_args(build_parser().parse_args(["render", "p", "--out", "o", "--steps", "10",
                                                      "--deflicker-steps", "12"]))
    assert info.value.kind is ErrorKind.BAD_SETTINGS
    assert main(["render", "p", "--out", "o", "--steps", "10", "--deflicker-steps", "12"]) == 2


def test_a_folder_of_finished_frames_is_not_mixed_with_frames_of_other_settings(tiny_model_dir, passes, tmp_path):
    out = tmp_path / "out"
    run_render(JobSpec(passes, out, _settings(tiny_model_dir, frames="1-2")))
    # the same look may be rendered in parts (other frames, other batch size) into the same folder
    assert run_render(JobSpec(passes, out, _settings(tiny_model_dir, frames="3-3", batch_size=1))).frames_written == [3]
    before = _frames(out)
    with pytest.raises(InputError, match="other settings"):
        run_render(JobSpec(passes, out, _settings(tiny_model_dir, prompt="a different prompt")))
    assert _frames(out) == before  # nothing was touched
    forced = run_render(JobSpec(passes, out, _settings(tiny_model_dir, prompt="a different prompt", overwrite=True)))
    assert forced.frames_written == [1, 2, 3, 4, 5]
    # and from then on the folder belongs to the new look
    assert run_render(JobSpec(passes, out, _settings(tiny_model_dir, prompt="a different prompt"))).frames_written == []
