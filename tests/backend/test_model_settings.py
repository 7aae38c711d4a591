"""Issue 16, the settings side: textual-inversion embeddings and the prediction type reach the loader from the CLI,
the settings JSON and the HTTP API (confined to the model roots), and v-prediction models are handled wherever the
engine turns a model output into a predicted clean sample (in-iteration deflicker, previews) or back (img2img
inversion)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler
from PIL import Image
from safetensors.torch import save_file

from neurender.cli import main as cli_main
from neurender.contract import ContractError, RenderSettings
from neurender.engine.inversion import ddim_invert
from neurender.engine.prediction import eps_from_x0, predict_x0
from neurender.models.cache import PipelineCache
from neurender.models.sd15_config import SD15_SCHEDULER
from neurender.runner import JobSpec, run_render
from support.synthetic_passes import SyntheticScene

H, W = 48, 64


# ----------------------------------------------------------------------------------------------------------------
# The prediction-type conversions against diffusers' own schedulers
# ----------------------------------------------------------------------------------------------------------------


def _schedulers(prediction_type: str):
    cfg = dict(SD15_SCHEDULER, prediction_type=prediction_type)
    yield "ddim", DDIMScheduler.from_config(cfg)
    yield "euler_a", EulerAncestralDiscreteScheduler.from_config(cfg)
    yield "dpmpp_2m", DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", solver_order=2)


def _their_x0(name, sched, output, t, sample):
    if name == "dpmpp_2m":
        return sched.convert_model_output(output, sample=sample)
    step = sched.step(output, t, sample, generator=torch.Generator().manual_seed(0))
    return step.pred_original_sample


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predicted_x0_is_the_schedulers_own_and_the_inverse_steers_it(prediction_type):
    g = torch.Generator().manual_seed(0)
    for name, sched in _schedulers(prediction_type):
        sched.set_timesteps(10)
        for k in (0, 4, 9):
            t = sched.timesteps[k]
            sched._step_index = k if name != "ddim" else None
            sample = torch.randn(2, 4, 6, 8, generator=g) * (float(sched.init_noise_sigma) if k == 0 else 1.0)
            output = torch.randn(2, 4, 6, 8, generator=g)
            ours = predict_x0(sched, sample, output, t)
            theirs = _their_x0(name, sched, output, t, sample)
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4, msg=f"{name} {prediction_type} step {k}")
            # what the deflicker hook relies on: the output it hands back makes the scheduler see ITS x0
            target = torch.randn(2, 4, 6, 8, generator=g)
            sched._step_index = k if name != "ddim" else None
            steered = _their_x0(name, sched, eps_from_x0(sched, sample, target, t), t, sample)
            torch.testing.assert_close(steered, target, rtol=1e-3, atol=1e-3, msg=f"{name} {prediction_type} inverse")


class _OracleVelocityUNet(torch.nn.Module):
    """Answers the velocity that implies the fixed noise ``E`` at every timestep (Salimans & Ho: v = sqrt(a) eps -
    sqrt(1-a) x0 with x0 = (x - sqrt(1-a) eps) / sqrt(a)). DDIM inversion with it is exact."""

    def __init__(self, noise, alphas):
        super().__init__()
        self.noise, self.alphas = noise, alphas
        self.register_buffer("anchor", torch.zeros(()))

    @property
    def dtype(self):
        return torch.float32

    def forward(self, x, t, encoder_hidden_states=None, return_dict=False):
        a = self.alphas[int(t)].float()
        x0 = (x - (1 - a).sqrt() * self.noise) / a.sqrt()
        return (a.sqrt() * self.noise - (1 - a).sqrt() * x0,)


def test_img2img_inversion_of_a_v_prediction_model_uses_the_noise_the_velocity_implies():
    g = torch.Generator().manual_seed(1)
    alphas = DDIMScheduler.from_config(SD15_SCHEDULER).alphas_cumprod
    x0, noise = torch.randn(2, 4, 6, 8, generator=g), torch.randn(2, 4, 6, 8, generator=g)
    unet = _OracleVelocityUNet(noise, alphas)
    ts = [1, 201, 401, 601]
    expected = alphas[601].sqrt() * x0 + (1 - alphas[601]).sqrt() * noise
    got, _ = ddim_invert(unet, alphas, x0, torch.zeros(1, 1, 1), ts, prediction_type="v_prediction")
    torch.testing.assert_close(got, expected.float(), rtol=1e-4, atol=1e-4)
    wrong, _ = ddim_invert(unet, alphas, x0, torch.zeros(1, 1, 1), ts)  # the velocity taken for noise
    assert float((wrong - expected).abs().mean()) > 0.1


# ----------------------------------------------------------------------------------------------------------------
# Settings fields end to end
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def passes(tmp_path_factory):
    root = tmp_path_factory.mktemp("passes")
    SyntheticScene(frames=2, width=W, height=H, motion=(4.0, 0.0)).write(root)
    return root


def test_settings_fields_validate_and_round_trip():
    s = RenderSettings(embeddings=["/m/EasyNegative.pt"], prediction_type="v_prediction")
    assert RenderSettings.from_dict(json.loads(s.to_json())) == s
    for bad in ({"prediction_type": "sample"}, {"embeddings": "/m/x.pt"}, {"embeddings": [""]}, {"embeddings": [3]}):
        with pytest.raises(ContractError):
            RenderSettings.from_dict(bad)


class _Recording(PipelineCache):
    def __init__(self):
        super().__init__()
        self.calls = []

    def get(self, *args, **kwargs):
        self.calls.append(kwargs)
        return super().get(*args, **kwargs)


def _frames(out: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p), dtype=np.float32) for p in sorted(out.glob("frame_*.png"))]


def test_cli_embedding_and_prediction_type_reach_the_loaded_model(tiny_model_dir, passes, tmp_path):
    cache = PipelineCache()
    width = cache.get(str(tiny_model_dir.model)).pipe.text_encoder.get_input_embeddings().weight.shape[1]
    folder = tmp_path / "embeddings"
    folder.mkdir()
    save_file({"emb_params": torch.randn(2, width, generator=torch.Generator().manual_seed(5)) * 3},
              str(folder / "grainy.safetensors"))
    common = ["render", str(passes), "--model", str(tiny_model_dir.model), "--steps", "2", "--scheduler", "ddim",
              "--progress", "none", "--controlnet", f"depth={tiny_model_dir.controlnets['depth']}"]
    runs = {
        "plain": ["--prompt", "a cat"],
        "token": ["--prompt", "a cat grainy", "--embedding", str(folder)],
        "unused": ["--prompt", "a cat", "--embedding", str(folder)],
        "vpred": ["--prompt", "a cat", "--prediction-type", "v_prediction"],
    }
    frames = {}
    for name, extra in runs.items():
        assert cli_main(common + extra + ["--out", str(tmp_path / name)]) == 0, name
        frames[name] = _frames(tmp_path / name)
    assert np.array_equal(np.stack(frames["plain"]), np.stack(frames["unused"]))
    assert np.abs(np.stack(frames["plain"]) - np.stack(frames["token"])).max() > 1
    assert np.abs(np.stack(frames["plain"]) - np.stack(frames["vpred"])).max() > 1
    with pytest.raises(SystemExit):
        cli_main(common + ["--prediction-type", "sample", "--out", str(tmp_path / "bad")])
    assert cli_main(common + ["--embedding", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "missing")]) == 2
    assert not list((tmp_path / "missing").glob("frame_*.png"))


def test_runner_passes_embeddings_and_prediction_type_to_the_loader(tiny_model_dir, passes, tmp_path):
    cache = _Recording()
    width = cache.get(str(tiny_model_dir.model)).pipe.text_encoder.get_input_embeddings().weight.shape[1]
    save_file({"emb_params": torch.randn(1, width)}, str(tmp_path / "nrtokzq.safetensors"))
    cache.calls.clear()
    settings = RenderSettings(prompt="x nrtokzq", steps=1, model=str(tiny_model_dir.model), embeddings=[str(tmp_path)],
                              prediction_type="v_prediction", scheduler="ddim")
    run_render(JobSpec(pass_dir=passes, out_dir=tmp_path / "out", settings=settings), pipelines=cache)
    assert cache.calls[0]["embeddings"] == [str(tmp_path)]
    assert cache.calls[0]["prediction_type"] == "v_prediction"
    loaded = cache.get(str(tiny_model_dir.model), embeddings=[str(tmp_path)], prediction_type="v_prediction")
    assert loaded.pipe.scheduler.config.prediction_type == "v_prediction" and loaded.embedding_tokens == ["nrtokzq"]


def test_server_confines_embedding_paths_to_the_model_roots(tmp_path, monkeypatch):
    from neurender.server.app import create_app
    from neurender.server.config import ServerConfig
    from neurender.server.fake_runner import STEP_SECONDS_ENV, run_fake_render, write_fake_pass_folder
    from neurender.server.live import LiveServer

    monkeypatch.setenv(STEP_SECONDS_ENV, "0.001")
    root = tmp_path / "root"
    shot = write_fake_pass_folder(root / "shot", frames=1)
    config = ServerConfig(data_dir=tmp_path / "data", roots=[root], device="cpu")
    with LiveServer(create_app(config, runner=run_fake_render)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.post("/jobs", json={"pass_dir": str(shot), "settings": {"embeddings": ["/usr/lib/x.pt"]}})
        assert r.status_code == 403 and "embedding" in r.json()["detail"], r.text
        r = client.post("/jobs", json={"pass_dir": str(shot), "settings": {"prediction_type": "x"}})
        assert r.status_code == 422, r.text
        inside = root / "emb"
        inside.mkdir()
        r = client.post("/jobs", json={"pass_dir": str(shot), "out_dir": str(root / "out"),
                                       "settings": {"steps": 1, "embeddings": [str(inside)],
                                                    "prediction_type": "v_prediction"}})
        assert r.status_code == 201, r.text
        assert r.json()["settings"]["embeddings"] == [str(inside)]
