"""The consistency-strategy protocol (engine/strategy.py): one signature for every mode, chosen once from the options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurender.contract import ANCHOR_MODES, CONSISTENCY_MODES, RenderSettings
from neurender.engine.keyframes import KeyframeStrategy
from neurender.engine.sampler import LockstepSampler, SamplerOptions
from neurender.engine.strategy import STRATEGIES, Chunks, Windows, strategy_for
from neurender.models.loading import load_pipeline

H, W = 48, 64


def test_sampler_default_consistency_is_the_contracts():
    assert SamplerOptions().consistency == RenderSettings().consistency


def test_every_contract_mode_has_exactly_one_strategy():
    assert set(STRATEGIES) == set(CONSISTENCY_MODES)
    kinds = {mode: strategy_for(SamplerOptions(consistency=mode, batch_size=3, window_size=5, window_stride=2))
             for mode in CONSISTENCY_MODES}
    assert isinstance(kinds["window"], Windows) and (kinds["window"].size, kinds["window"].stride) == (5, 2)
    assert isinstance(kinds["keyframes"], KeyframeStrategy)
    for mode in ("off", "first", "first+prev"):
        assert isinstance(kinds[mode], Chunks) and kinds[mode].batch_size == 3
    for mode, strategy in kinds.items():
        assert strategy.name == mode
        assert strategy.takes_anchors == (mode in ANCHOR_MODES)
        assert strategy.cross_frame == (mode != "off")
    with pytest.raises(ValueError, match="not one of"):
        strategy_for(SamplerOptions(consistency="nope"))


def test_groups_cover_every_frame():
    assert [g for g, _ in Chunks("first", 2).groups(5)] == [[0, 1], [2, 3], [4]]
    windows = Windows(4, 3).groups(11)
    assert sorted({p for g, _ in windows for p in g}) == list(range(11))
    assert all(w is not None and len(w) == len(g) for g, w in windows)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return load_pipeline(tiny_model_dir.model, [("depth", tiny_model_dir.controlnets["depth"])]).pipe


def _controls(n):
    rng = np.random.RandomState(0)
    images = [torch.from_numpy(rng.rand(1, 3, H, W).astype(np.float32)) for _ in range(n)]
    return lambda positions: [torch.cat([images[p] for p in positions])]


class _Reversed(Chunks):
    """A strategy written against the protocol only: one frame per call, in reverse order, counting calls."""

    def __init__(self) -> None:
        super().__init__("off", 1)
        self.calls: list[list[int]] = []

    def noise_prediction(self, sampler, latents, t, i, n_steps):
        out = torch.zeros_like(latents)
        for p in reversed(range(latents.shape[0])):
            sampler.check_stop()
            self.calls.append([p])
            out[[p]] = sampler.evaluate([p], latents[[p]], t, i, n_steps)
        return out


def test_a_strategy_passed_in_replaces_the_options_choice(pipe):
    opts = SamplerOptions(steps=2, seed=1, consistency="off", batch_size=4, control_scales=[1.0])
    custom = _Reversed()
    ours = LockstepSampler(pipe, opts, 3, H, W, controls=_controls(3), prompt="x", strategy=custom).run()
    assert custom.calls == [[2], [1], [0]] * 2
    # "off" has no path between frames, so the order and grouping of the calls cannot change the result
    plain = LockstepSampler(pipe, opts, 3, H, W, controls=_controls(3), prompt="x").run()
    torch.testing.assert_close(ours, plain, atol=1e-4, rtol=1e-4)  # batched vs single calls
