"""Keyframe mode (TokenFlow): keyframe draws, linear weights, exact token propagation, pass correspondences at UNet
resolutions, the bounded-memory feature fallback, DDIM inversion and the img2img/PnP path, the runner wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from neurender.contract import RenderSettings
from neurender.deflicker.motion import MotionSource
from neurender.engine.keyframes import KeyframeStrategy, keyframe_neighbours, pick_keyframes
from neurender.engine.sampler import LockstepSampler, SamplerOptions
from neurender.engine.tokenflow_correspondence import PassCorrespondences, carry, token_grid
from neurender.engine.tokenflow_nn import memory_bound_bytes, nearest_tokens, nearest_tokens_to_keyframes
from neurender.models.loading import load_pipeline
from neurender.passes.folder import PassFolder
from support.synthetic_passes import SyntheticScene

H, W = 48, 64  # render size; latent 6x8, token grids 6x8, 3x4, 2x2, 1x1


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return load_pipeline(tiny_model_dir.model, [("depth", tiny_model_dir.controlnets["depth"])]).pipe


def _controls(pipe, n, seed=0):
    rng = np.random.RandomState(seed)
    images = [torch.from_numpy(rng.rand(1, 3, H, W).astype(np.float32)) for _ in range(n)]

    def provide(positions):
        return [torch.cat([images[p] for p in positions])]

    return provide


def _scene_folder(tmp_path, motion=(0.0, 0.0), frames=6):
    scene = SyntheticScene(frames=frames, width=W, height=H, motion=motion, square_size=16.0, square_start=(16.0, 16.0))
    scene.write(tmp_path)
    return scene, PassFolder.open(tmp_path)


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= out[:, :-1].copy()
    out[:, :-1] |= out[:, 1:].copy()
    return out


# --------------------------------------------------------------------------------------------------------------
def test_one_keyframe_per_block_redrawn_every_step_and_reproducible():
    draws = [pick_keyframes(21, 8, seed=3, step=s) for s in range(12)]
    for keys in draws:
        assert len(keys) == 3
        assert [k // 8 for k in keys] == [0, 1, 2] and keys[-1] < 21
    assert len({tuple(k) for k in draws}) > 1  # redrawn
    assert draws == [pick_keyframes(21, 8, seed=3, step=s) for s in range(12)]  # same (seed, step) -> same draw
    assert pick_keyframes(21, 8, seed=4, step=0) != draws[0] or pick_keyframes(21, 8, seed=5, step=0) != draws[0]


def test_neighbour_weights_fall_linearly_with_distance():
    keys = [2, 10]
    assert keyframe_neighbours(2, keys) == [(2, 1.0)]
    assert keyframe_neighbours(0, keys) == [(2, 1.0)]  # before the first keyframe
    assert keyframe_neighbours(13, keys) == [(10, 1.0)]  # after the last
    for f in range(3, 10):
        (a, wa), (b, wb) = keyframe_neighbours(f, keys)
        assert (a, b) == (2, 10)
        assert wa == pytest.approx((10 - f) / 8) and wb == pytest.approx((f - 2) / 8)
        assert wa + wb == pytest.approx(1.0)


def test_token_grid_follows_the_unet_downsampling():
    assert token_grid(48, 6, 8) == (6, 8)
    assert token_grid(12, 6, 8) == (3, 4)
    assert token_grid(4, 6, 8) == (2, 2)
    assert token_grid(35, 13, 9) == (7, 5)  # ceil halving of odd sizes
    with pytest.raises(ValueError):
        token_grid(7, 6, 8)


# --------------------------------------------------------------------------------------------------------------
def test_pass_correspondences_match_the_known_motion_at_every_token_grid(tmp_path):
    # the square moves 8 px = 1 latent token per frame to the right; wall, floor and sky are static
    scene, folder = _scene_folder(tmp_path, motion=(8.0, 0.0))
    corr = PassCorrespondences(MotionSource.from_folder(folder, height=H, width=W))
    for p, k in [(0, 1), (0, 3), (3, 1), (2, 4)]:  # the square stays inside the image
        d = k - p
        for factor, (h, w) in [(1, (6, 8)), (2, (3, 4))]:
            tm = corr.token_map(p, k, h, w)
            flow, valid = tm.flow.numpy(), tm.valid.numpy().reshape(h, w)
            f = 8 * factor
            sq = scene.square_mask(scene.frame_start + p)
            # a token belongs wholly to the square / to the wall if all its pixels do
            cells = sq.reshape(h, f, w, f).mean(axis=(1, 3))
            inside = cells == 1.0
            assert inside.any() or factor > 1
            np.testing.assert_allclose(flow[inside], np.tile([d * 8 / f, 0.0], (int(inside.sum()), 1)), atol=1e-4)
            assert (valid[inside] > 0.5).all()  # the visibility tests distrust a 2-px band at silhouettes
            # static wall tokens away from the square in both frames (and above the floor edge): zero flow, visible
            sk = scene.square_mask(scene.frame_start + k).reshape(h, f, w, f).mean(axis=(1, 3))
            near = _dilate((cells > 0) | (sk > 0))
            wall = ~near
            wall[(8 * 4) // f :] = False  # the wall/floor edge at row 36 has its own distrusted band
            wall[0] = False  # sky
            assert wall.any() or factor > 1
            np.testing.assert_allclose(flow[wall], 0.0, atol=1e-4)
            assert (valid[wall] > 0.99).all()
            # background tokens that the square covers in frame k are occluded there
            hidden = (cells == 0) & (sk == 1.0)
            if hidden.any():
                assert (valid[hidden] < 0.5).all()
    # carrying a keyframe's token grid along the map moves the tokens by the known motion
    tm = corr.token_map(0, 2, 6, 8)
    ys, xs = np.mgrid[0:6, 0:8].astype(np.float32)
    grid = torch.from_numpy(np.stack([xs, ys], -1).reshape(1, 48, 2))
    moved = carry(grid, tm, 6, 8)[0].numpy().reshape(6, 8, 2)
    sq = scene.square_mask(scene.frame_start).reshape(6, 8, 8, 8).mean(axis=(1, 3)) == 1
    np.testing.assert_allclose(moved[sq][:, 0], xs[sq] + 2, atol=1e-4)
    np.testing.assert_allclose(moved[sq][:, 1], ys[sq], atol=1e-4)


def test_far_frames_reproject_static_points_with_depth_and_cameras(tmp_path):
    scene, folder = _scene_folder(tmp_path, motion=(8.0, 0.0), frames=6)
    source = MotionSource.from_folder(folder, height=H, width=W)
    source.chain_limit = 1  # frames 0 -> 4 are "far": depth + camera reprojection, trusted on static points only
    tm = PassCorrespondences(source).token_map(0, 4, 6, 8)
    valid = tm.valid.numpy().reshape(6, 8)
    cells = scene.square_mask(scene.frame_start).reshape(6, 8, 8, 8).mean(axis=(1, 3))
    later = scene.square_mask(scene.frame_start + 4).reshape(6, 8, 8, 8).mean(axis=(1, 3))
    wall = (cells == 0) & (later == 0)
    np.testing.assert_allclose(tm.flow.numpy()[wall], 0.0, atol=1e-4)
    assert (valid[wall] > 0.99).all()
    assert (valid[cells == 1] < 0.01).all()  # the moving square is not static: reprojection does not trust it


# --------------------------------------------------------------------------------------------------------------
class _Probe:
    """Records every attn1 output of the UNet with the keyframe phase and frame positions of the call."""

    def __init__(self, unet, strategy):
        self.strategy = strategy
        self.calls = []
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in unet.named_modules()
                        if name.endswith("attn1")]

    def _hook(self, name):
        def hook(module, args, output):
            ctx = self.strategy.ctx
            b = ctx.cross.batch
            if b is not None and not b.is_reference:
                self.calls.append((ctx.cross.step, ctx.phase, name, list(b.positions), list(ctx.keyframes),
                                   output.detach().reshape(b.cfg, len(b.positions), *output.shape[1:]).clone()))
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def test_static_scene_with_exact_correspondences_propagates_keyframe_tokens_exactly(pipe, tmp_path):
    _, folder = _scene_folder(tmp_path, motion=(0.0, 0.0), frames=7)
    strategy = KeyframeStrategy(block=3, correspondences=PassCorrespondences(MotionSource.from_folder(folder, height=H,
                                                                                                       width=W)))
    opts = SamplerOptions(steps=2, seed=5, consistency="keyframes", fixed_noise=False, batch_size=2,
                          control_scales=[1.0], scheduler="ddim")
    sampler = LockstepSampler(pipe, opts, 7, H, W, controls=_controls(pipe, 7), prompt="a red car", strategy=strategy)
    probe = _Probe(pipe.unet, strategy)
    try:
        sampler.run()
    finally:
        probe.close()
    keyframe_out = {(s, name): (pos, out) for s, phase, name, pos, _, out in probe.calls if phase == "keyframes"}
    checked, spread = 0, 0.0
    for step, phase, name, positions, keys, out in probe.calls:
        if phase != "propagate":
            continue
        kpos, kout = keyframe_out[(step, name)]
        assert kpos == keys
        for j, p in enumerate(positions):
            want = sum(w * kout[:, kpos.index(k)] for k, w in keyframe_neighbours(p, keys))
            torch.testing.assert_close(out[:, j], want, atol=1e-5, rtol=1e-5)
            checked += 1
        spread = max(spread, float((kout[:, 0] - kout[:, -1]).abs().max()))
    layers = len(probe.handles)
    assert layers >= 7 and checked == 2 * layers * 4  # steps x UNet attn1 layers x non-keyframes
    assert spread > 1e-3  # the keyframes differ, so the blend is a real test
    assert strategy.ctx is not None and strategy.ctx.stats["own"] == 0


def test_occluded_tokens_fall_back_to_the_frames_own_attention(pipe, tmp_path):
    _, folder = _scene_folder(tmp_path, motion=(8.0, 0.0), frames=5)
    strategy = KeyframeStrategy(block=5, correspondences=PassCorrespondences(MotionSource.from_folder(folder, height=H,
                                                                                                       width=W)))
    opts = SamplerOptions(steps=1, seed=1, consistency="keyframes", batch_size=4, control_scales=[1.0])
    LockstepSampler(pipe, opts, 5, H, W, controls=_controls(pipe, 5), prompt="x", strategy=strategy).run()
    assert strategy.ctx.stats["own"] > 0  # the moving square uncovers and hides wall tokens


# --------------------------------------------------------------------------------------------------------------
def test_feature_nearest_neighbours_are_exact():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(50, 8, generator=g), torch.randn(37, 8, generator=g)
    brute = (torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(k, dim=-1).T).argmax(-1)
    for max_elements in (1, 37, 100, 10_000):
        assert torch.equal(nearest_tokens(q, k, max_elements), brute)
    perm = torch.randperm(37, generator=g)
    assert torch.equal(nearest_tokens(k[perm] * 3.0, k, 64), perm)  # scaled copies: cosine finds the originals


def _peak_live_bytes(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def test_feature_path_memory_stays_within_its_bound_as_frames_grow():
    t, c, keys, max_elements = 256, 32, 3, 4096
    bound = memory_bound_bytes(t, c, max_elements)
    g = torch.Generator().manual_seed(1)
    kf = torch.randn(keys, t, c, generator=g)
    working = []
    for n in (2, 8, 32):
        frames = torch.randn(n, t, c, generator=g)
        result_bytes = n * keys * t * 8
        working.append(_peak_live_bytes(lambda: nearest_tokens_to_keyframes(frames, kf, max_elements)) - result_bytes)
        full_matrix = n * t * keys * t * 4  # what one similarity matrix of all frames x all keyframe tokens needs
        assert working[-1] <= bound < full_matrix
    assert max(working) - min(working) <= 1024  # does not grow with the number of frames


def test_keyframe_mode_without_passes_uses_feature_correspondences(pipe):
    opts = SamplerOptions(steps=2, seed=2, consistency="keyframes", batch_size=2, control_scales=[1.0])
    s = LockstepSampler(pipe, opts, 5, H, W, controls=_controls(pipe, 5), prompt="x")
    a = s.run()
    assert s.strategy.correspondences.needs_features and s.strategy.ctx.stats["carried"] > 0
    b = LockstepSampler(pipe, opts, 5, H, W, controls=_controls(pipe, 5), prompt="x").run()
    assert torch.equal(a, b) and torch.isfinite(a).all()


# --------------------------------------------------------------------------------------------------------------
def test_keyframe_mode_resumes_exactly_from_a_checkpoint(pipe, tmp_path):
    opts = SamplerOptions(steps=3, seed=4, consistency="keyframes", batch_size=2, control_scales=[1.0])
    full = LockstepSampler(pipe, opts, 5, H, W, controls=_controls(pipe, 5), prompt="x").run()
    ckpt = tmp_path / "state.pt"

    class Stop(Exception):
        pass

    def stop_after_two(done, total):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        LockstepSampler(pipe, opts, 5, H, W, controls=_controls(pipe, 5), prompt="x", checkpoint_path=ckpt,
                        fingerprint="k", on_step=stop_after_two).run()
    resumed = LockstepSampler(pipe, opts, 5, H, W, controls=_controls(pipe, 5), prompt="x", checkpoint_path=ckpt,
                              fingerprint="k").run()
    assert torch.equal(full, resumed)


def test_ddim_inversion_reconstructs_the_source(pipe):
    from neurender.engine.inversion import ddim_invert, ddim_reconstruct, inversion_timesteps

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 6, 8, generator=g)
    embeds = pipe.encode_prompt("", "cpu", 1, False)[0]
    alphas = pipe.scheduler.alphas_cumprod
    errors = {}
    for steps in (4, 40):
        ts = inversion_timesteps(1000, steps, 600)
        xt, rec = ddim_invert(pipe.unet, alphas, x0, embeds, ts, record=[ts[-1]])
        assert torch.equal(rec[ts[-1]], xt)
        back = ddim_reconstruct(pipe.unet, alphas, xt, embeds, list(reversed(ts)))
        errors[steps] = float((back - x0).abs().mean())
    assert errors[40] < errors[4] and errors[40] < 0.05 * float(x0.abs().mean())


def test_img2img_starts_from_the_inverted_render_and_pnp_changes_the_result(pipe):
    from neurender.engine.pnp import Img2Img

    g = torch.Generator().manual_seed(3)
    src = torch.rand(4, 3, H, W, generator=g) * 2 - 1
    opts = SamplerOptions(steps=4, seed=0, consistency="keyframes", batch_size=2, control_scales=[1.0],
                          scheduler="ddim")

    def run(**kw):
        img = Img2Img(source=lambda: src, strength=0.5, inversion_steps=8, **kw)
        s = LockstepSampler(pipe, opts, 4, H, W, controls=_controls(pipe, 4), prompt="x",
                            strategy=KeyframeStrategy(block=2, img2img=img))
        return s.run(), img

    plain, _ = run(pnp_features=0.0, pnp_attention=0.0)
    injected, _ = run(pnp_features=0.8, pnp_attention=0.5)
    assert torch.isfinite(injected).all()
    assert float((plain - injected).abs().max()) > 1e-6  # the source branch reaches the result
    # starting from the render keeps the result closer to the render's latents than starting from noise
    noise = LockstepSampler(pipe, opts, 4, H, W, controls=_controls(pipe, 4), prompt="x").run()
    x0 = LockstepSampler(pipe, opts, 4, H, W).encode(src)
    assert float((plain - x0).abs().mean()) < float((noise - x0).abs().mean())


# --------------------------------------------------------------------------------------------------------------
def test_settings_validate_keyframe_fields():
    RenderSettings(consistency="keyframes", keyframe_block=4, img2img_strength=0.6).check()
    for bad in ({"keyframe_block": 0}, {"img2img_strength": 1.5}, {"inversion_steps": 0}, {"pnp_features": -0.1},
                {"consistency": "first", "img2img_strength": 0.5}):
        with pytest.raises(ValueError):
            RenderSettings(**{"consistency": "keyframes", **bad}).check()


def test_runner_renders_keyframe_mode_with_exact_correspondences(tiny_model_dir, tmp_path):
    from neurender.contract import ControlNetUnit
    from neurender.runner import JobSpec, run_render

    scene = SyntheticScene(frames=5, width=W, height=H, motion=(8.0, 0.0), square_size=16.0, square_start=(16.0, 16.0))
    scene.write(tmp_path / "passes")
    settings = RenderSettings(prompt="x", steps=2, model=str(tiny_model_dir.model), consistency="keyframes",
                              keyframe_block=2, img2img_strength=0.5, inversion_steps=4, batch_size=2,
                              controlnets=[ControlNetUnit(kind="depth", model=str(tiny_model_dir.controlnets["depth"]))])
    result = run_render(JobSpec(pass_dir=tmp_path / "passes", out_dir=tmp_path / "out", settings=settings))
    assert result.frames_written == scene.frame_numbers
    assert all((tmp_path / "out" / f"frame_{f:04d}.png").stat().st_size > 0 for f in scene.frame_numbers)
