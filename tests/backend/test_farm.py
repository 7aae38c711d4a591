"""Render-farm scale: chunk plans, shared anchors, blended overlaps, idempotent merges, the farm CLI (issue #7)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neurender.cli import main
from neurender.contract import ControlNetUnit, RenderSettings
from neurender.engine.attention import CrossFrameState, FrameBatch
from neurender.errors import InputError
from neurender.farm.anchor_files import ANCHORS_DATA, load_anchors
from neurender.farm.anchors import compute_anchors, pick_anchor_frames
from neurender.farm.chunks import CHUNK_MARKER, chunk_dir, chunk_for, plan_chunks, render_chunk
from neurender.farm.merge import blend_weight, merge_chunks
from neurender.models.cache import PipelineCache
from support.synthetic_passes import write_synthetic_pass_folder

W, H = 64, 48


@pytest.fixture(scope="module")
def passes(tmp_path_factory):
    path = tmp_path_factory.mktemp("passes")
    write_synthetic_pass_folder(path, frames=10, width=W, height=H, motion=(2.0, 0.0))
    return path


@pytest.fixture(scope="module")
def cache():
    return PipelineCache()


def _settings(tiny, **kw) -> RenderSettings:
    base = dict(prompt="a wooden toy", steps=3, model=str(tiny.model), batch_size=4, consistency="first+prev",
                controlnets=[ControlNetUnit(kind="depth", model=str(tiny.controlnets["depth"]))])
    base.update(kw)
    return RenderSettings(**base)


@pytest.fixture(scope="module")
def anchors(tiny_model_dir, passes, cache, tmp_path_factory):
    return compute_anchors(passes, tmp_path_factory.mktemp("anchors"), _settings(tiny_model_dir), count=2, pipelines=cache)


def _img(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def _render(tiny, passes, out, core, cache, anchors=None, **kw):
    settings = _settings(tiny, frames=core, **kw)
    return render_chunk(passes, out, settings, overlap=2, anchors=anchors, pipelines=cache)


# -- plans and weights (pure) -----------------------------------------------------------------------------------


def test_plan_covers_the_range_once_and_every_overlap_fits():
    shot = list(range(1, 101))
    plan = plan_chunks(shot, (1, 100), chunk_size=24, overlap=4)
    cores = [f for c in plan for f in range(c.core[0], c.core[1] + 1)]
    assert cores == shot  # each frame owned by exactly one chunk
    assert [c.core for c in plan] == [(1, 24), (25, 48), (49, 72), (73, 100)]  # the 4-frame rest joined the last chunk
    assert plan[0].render == (1, 28) and plan[1].render == (21, 52) and plan[-1].render == (69, 100)
    assert plan_chunks(shot, (10, 20), 24, 4)[0].render == (6, 24)  # a sub-range still overlaps into the shot
    with pytest.raises(InputError, match="twice the overlap"):
        plan_chunks(shot, (1, 100), 6, 4)
    with pytest.raises(InputError, match="outside the shot"):
        chunk_for(shot, (90, 110), 2)


def test_blend_weights_cross_fade_linearly_and_symmetrically():
    n, border = 3, 20
    w = [blend_weight(f, border, n) for f in range(border - n, border + n)]
    assert np.allclose(w, [1 / 12, 3 / 12, 5 / 12, 7 / 12, 9 / 12, 11 / 12])
    assert np.allclose(np.diff(w), 1 / 6) and np.allclose(np.array(w) + np.array(w[::-1]), 1.0)


def test_several_shots_get_distinct_output_folders(tmp_path):
    from neurender.farm.cli_farm import shot_out_dirs

    out = tmp_path / "out"
    assert shot_out_dirs(out, [tmp_path / "sh010" / "passes"]) == [out]
    assert shot_out_dirs(out, [tmp_path / "sh010", tmp_path / "sh020"]) == [out / "sh010", out / "sh020"]
    # the usual layout: every shot's pass folder has the same name
    same = [tmp_path / "show" / "sh010" / "passes", tmp_path / "show" / "sh020" / "passes"]
    assert shot_out_dirs(out, same) == [out / "sh010" / "passes", out / "sh020" / "passes"]
    with pytest.raises(InputError, match="twice"):
        shot_out_dirs(out, [same[0], same[0] / ".." / "passes"])


def test_pick_anchor_frames_spreads_over_the_shot():
    assert pick_anchor_frames(range(1, 11), 3) == [1, 6, 10]
    assert pick_anchor_frames(range(1, 11), 1) == [6]
    assert pick_anchor_frames([4, 5], 5) == [4, 5]


# -- cross-frame attention with anchors --------------------------------------------------------------------------


def test_anchor_reference_passes_add_up_and_replace_the_first_frame():
    from neurender.engine.attention import CrossFrameAttnProcessor

    state = CrossFrameState(mode="first+prev", use_reference=True, first_from_anchors=True, step=0)
    proc = CrossFrameAttnProcessor(state)
    proc._step = 0
    t, c = 5, 8
    k_ref, v_ref = torch.randn(2, 3, t, c), torch.randn(2, 3, t, c)  # cfg 2, three anchors
    state.batch = FrameBatch(positions=[0, 1, 2], cfg=2, is_reference=True)
    proc._gather(k_ref.reshape(6, t, c), k_ref.reshape(6, t, c), v_ref.reshape(6, t, c), state.batch, state)
    assert proc._ref[0].shape == (2, 3 * t, c) and torch.equal(proc._ref[0][:, t:2 * t], k_ref[:, 1])
    # a chunk whose positions do not include its own first frame still runs: the anchors take its place
    k = torch.randn(2, 2, t, c)
    batch = FrameBatch(positions=[4, 5], cfg=2)
    proc._last = {3: (torch.randn(2, t, c), torch.randn(2, t, c))}  # the previous group's trailing frame
    q, keys, values = proc._gather(k.reshape(4, t, c), k.reshape(4, t, c), k.reshape(4, t, c), batch, state)
    assert keys.shape == (4, 1, (2 + 3) * t, c)  # [previous, self, three anchors]
    assert torch.equal(keys[1, 0, 2 * t:], k_ref[0].reshape(3 * t, c))


# -- anchors -----------------------------------------------------------------------------------------------------


def test_anchors_are_computed_once_verified_and_refused_when_they_do_not_fit(tiny_model_dir, passes, anchors, cache):
    folder = anchors.folder
    assert anchors.frames == [1, 10]
    assert tuple(anchors.data.latents.shape) == (3, 2, 4, H // 8, W // 8)  # x_t at every step, per anchor
    assert anchors.data.controls[0].shape == (2, 3, H, W)
    assert (folder / "anchor_0001.png").is_file() and (folder / "anchor_0010.png").is_file()
    mtime = (folder / ANCHORS_DATA).stat().st_mtime_ns
    again = compute_anchors(passes, folder, _settings(tiny_model_dir), count=2, pipelines=cache)
    assert again.digest == anchors.digest and (folder / ANCHORS_DATA).stat().st_mtime_ns == mtime  # not recomputed
    # the same frame numbers of another shot are not "up to date": that shot's anchors are computed
    other, reused = folder.parent / "other-passes", folder.parent / "reused"
    write_synthetic_pass_folder(other, frames=10, width=W, height=H, motion=(0.0, 1.0))
    shutil.copytree(folder, reused)
    redone = compute_anchors(other, reused, _settings(tiny_model_dir), count=2, pipelines=cache)
    assert redone.frames == [1, 10] and redone.digest != anchors.digest
    assert redone.meta["pass_dir"] == str(other.resolve())
    # a different prompt or seed may use them; different timesteps may not
    load_anchors(folder, _settings(tiny_model_dir, prompt="another prompt", seed=5))
    with pytest.raises(InputError, match="steps"):
        load_anchors(folder, _settings(tiny_model_dir, steps=4))
    with pytest.raises(InputError, match="consistency"):
        load_anchors(folder, _settings(tiny_model_dir, consistency="off"))
    with pytest.raises(InputError, match="has no anchors.json"):
        load_anchors(folder.parent / "nowhere", _settings(tiny_model_dir))
    broken = folder.parent / "broken"
    shutil.copytree(folder, broken)
    raw = bytearray((broken / ANCHORS_DATA).read_bytes())
    raw[-20] ^= 0xFF
    (broken / ANCHORS_DATA).write_bytes(bytes(raw))
    with pytest.raises(InputError, match="corrupt"):
        load_anchors(broken, _settings(tiny_model_dir))


def test_shared_anchors_make_a_frame_independent_of_the_chunk_that_renders_it(tiny_model_dir, passes, anchors, cache,
                                                                              tmp_path):
    """In ``first`` mode with anchors a frame attends to itself and the anchors only: both chunks agree exactly."""
    gaps = {}
    for name, use in (("anchors", anchors.folder), ("own-first", None)):
        out = tmp_path / name
        for core in ("1-5", "6-10"):
            _render(tiny_model_dir, passes, out, core, cache, anchors=use, consistency="first")
        low, high = out / ".chunks" / "0001-0005", out / ".chunks" / "0006-0010"
        gaps[name] = max(np.abs(_img(low / f"frame_{f:04d}.png") - _img(high / f"frame_{f:04d}.png")).max()
                         for f in (4, 5, 6, 7))
    assert gaps["anchors"] <= 1.0  # at most one grey level of float noise
    assert gaps["own-first"] > gaps["anchors"]  # each chunk's own first frame pulls it elsewhere


def test_a_chunk_is_deterministic_and_anchors_change_it(tiny_model_dir, passes, anchors, tmp_path):
    runs = []
    for name in ("node-a", "node-b"):
        _render(tiny_model_dir, passes, tmp_path / name, "1-5", PipelineCache(), anchors=anchors.folder)
        runs.append({p.name: p.read_bytes() for p in (tmp_path / name / ".chunks" / "0001-0005").glob("frame_*.png")})
    assert len(runs[0]) == 7 and runs[0] == runs[1]  # same settings + anchors: the same bytes on any node
    _render(tiny_model_dir, passes, tmp_path / "plain", "1-5", PipelineCache())
    plain = {p.name: p.read_bytes() for p in (tmp_path / "plain" / ".chunks" / "0001-0005").glob("frame_*.png")}
    assert plain != runs[0]


# -- chunks and merge -------------------------------------------------------------------------------------------


def test_chunks_merge_into_blended_frames_idempotently(tiny_model_dir, passes, anchors, cache, tmp_path):
    out = tmp_path / "out"
    first = _render(tiny_model_dir, passes, out, "1-5", cache, anchors=anchors.folder)
    assert first.chunk.render == (1, 7) and first.frames_rendered == list(range(1, 8))
    assert first.written == [1, 2, 3] and first.pending == [4, 5]  # 4, 5 wait for the chunk 6-10
    assert sorted(p.name for p in out.glob("frame_*.png")) == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
    second = _render(tiny_model_dir, passes, out, "6-10", cache, anchors=anchors.folder)
    assert second.chunk.render == (4, 10) and second.pending == []
    assert sorted(int(p.stem[6:]) for p in out.glob("frame_*.png")) == list(range(1, 11))
    low, high = chunk_dir(out, first.chunk), chunk_dir(out, second.chunk)
    for f, w in zip((4, 5, 6, 7), (1 / 8, 3 / 8, 5 / 8, 7 / 8)):
        expected = np.round((1 - w) * _img(low / f"frame_{f:04d}.png") + w * _img(high / f"frame_{f:04d}.png"))
        assert np.array_equal(_img(out / f"frame_{f:04d}.png"), expected)
    for f, src in ((1, low), (3, low), (8, high), (10, high)):  # outside the zone: the owner's file, byte for byte
        assert (out / f"frame_{f:04d}.png").read_bytes() == (src / f"frame_{f:04d}.png").read_bytes()
    # idempotent: a rerun of a finished chunk loads nothing and writes nothing; a lost frame comes back identical
    before = {p.name: p.read_bytes() for p in out.glob("frame_*.png")}
    assert _render(tiny_model_dir, passes, out, "1-5", None, anchors=anchors.folder).skipped
    (out / "frame_0005.png").unlink()
    again = merge_chunks(out)
    assert again.written == [5] and {p.name: p.read_bytes() for p in out.glob("frame_*.png")} == before


def test_merge_ignores_unfinished_chunks_and_refuses_mismatched_neighbours(tiny_model_dir, passes, cache, tmp_path):
    out = tmp_path / "out"
    _render(tiny_model_dir, passes, out, "1-5", cache)
    with pytest.raises(InputError, match="different settings"):  # another seed: the overlaps do not belong together
        _render(tiny_model_dir, passes, out, "6-10", cache, seed=7)
    with pytest.raises(InputError, match="different settings"):
        merge_chunks(out)
    (chunk_dir(out, chunk_for(range(1, 11), (6, 10), 2)) / CHUNK_MARKER).unlink()  # a chunk killed before its marker
    result = merge_chunks(out)
    assert result.pending == [4, 5] and result.written == []  # 1-3 were written when chunk 1-5 finished
    final = merge_chunks(out, final=True)
    assert final.written == [4, 5] and final.pending == []


# -- command line ------------------------------------------------------------------------------------------------


def _flags(tiny, steps=3):
    return ["--model", str(tiny.model), "--controlnet", f"depth={tiny.controlnets['depth']}", "--steps", str(steps),
            "--prompt", "a wooden toy", "--batch-size", "4"]


def test_cli_anchors_render_chunks_merge_with_json_progress_and_exit_codes(tiny_model_dir, passes, tmp_path, capsys):
    anchors_dir, out = tmp_path / "anchors", tmp_path / "out"
    assert main(["anchors", str(passes), "--out", str(anchors_dir), "--count", "2", "--progress", "json",
                 *_flags(tiny_model_dir)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["frames"] == [1, 10]
    steps = [json.loads(line)["step"] for line in captured.err.splitlines() if line.startswith("{")]
    assert steps[-1] == 3
    code = main(["render", str(passes), "--out", str(out), "--frames", "1-5", "--overlap", "2", "--anchors",
                 str(anchors_dir), "--progress", "json", *_flags(tiny_model_dir)])
    captured = capsys.readouterr()
    assert code == 0
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["event"] == "finished" and summary["rendered"] == [1, 7] and summary["pending"] == [4, 5]
    progress = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    assert progress and all(p["event"] == "progress" for p in progress) and progress[-1]["phase"] == "done"
    assert main(["merge", str(out), "--final", "--progress", "json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"] == [4, 5]
    # bad input: exit code 2, nothing rendered
    assert main(["render", str(passes), "--out", str(tmp_path / "x"), "--frames", "1-5", "--overlap", "2",
                 "--anchors", str(tmp_path / "missing"), *_flags(tiny_model_dir)]) == 2
    assert main(["render", str(passes), "--out", str(tmp_path / "x"), "--frames", "1-5", "--overlap", "2",
                 "--anchors", str(anchors_dir), *_flags(tiny_model_dir, steps=4)]) == 2
    assert not list((tmp_path / "x").glob("**/frame_*.png"))


def test_ray_farm_plans_a_shot_with_the_contracts_frame_rule(tmp_path):
    """The farm cuts the frames the server and the runner would render (the one rule, contract.select_frames): a range
    outside the shot is refused before anything is submitted, a subset is cut as given."""
    from neurender.contract import ContractError, ErrorKind
    from neurender.farm.ray_farm import FarmOptions, Shot, plan_shot

    manifest = write_synthetic_pass_folder(tmp_path / "passes", frames=6)
    folder, first = tmp_path / "passes", manifest.frame_start
    options = FarmOptions(address="127.0.0.1:1", chunk_size=2, overlap=1)
    with pytest.raises(ContractError) as caught:
        plan_shot(Shot(folder, tmp_path / "o", RenderSettings(frames=f"{first}-{first + 100}")), options)
    assert caught.value.kind == ErrorKind.BAD_FRAMES
    chunks = plan_shot(Shot(folder, tmp_path / "o", RenderSettings(frames=f"{first + 1}-{first + 4}")), options)
    assert chunks[0].core[0] == first + 1 and chunks[-1].core[-1] == first + 4
