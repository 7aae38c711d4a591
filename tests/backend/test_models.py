"""Offline model loading: random models, diffusers folders, single-file LDM checkpoints, ControlNets, LoRAs, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from neurender.contract import LoraSpec
from neurender.errors import InputError, ModelLoadError
from neurender.models.cache import PipelineCache
from neurender.models.doctor import environment_report, inspect_model
from neurender.models.loading import LoadedPipeline, load_pipeline
from neurender.models.random_models import build_random_lora, build_random_model, default_demo_model
from neurender.models.sd15_config import (
    SD15_TEXT_ENCODER,
    SD15_UNET,
    SD15_VAE,
    controlnet_config_from_unet,
    default_sd15_config_dir,
    tokenizer_data_dir,
    write_pipeline_config,
    write_sd15_config,
)
from support.ldm_export import controlnet_checkpoint_state, save_checkpoint, sd_checkpoint_state


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Generated config folders and demo models go to a temp dir, never the user's cache."""
    monkeypatch.setenv("NEURENDER_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """The "mini" random model (SD1.5 topology), its LDM single files and a weight-less config folder."""
    root = tmp_path_factory.mktemp("mini")
    paths = build_random_model(root / "built", size="mini", control_kinds=("depth",), seed=3)
    ref = load_pipeline(paths.model, [("depth", paths.controlnets["depth"])])
    p = ref.pipe
    state = sd_checkpoint_state(p.unet, p.vae, p.text_encoder)
    files = {
        "safetensors": save_checkpoint(state, root / "mini.safetensors"),
        "ckpt": save_checkpoint(state, root / "mini.ckpt"),
        "controlnet": save_checkpoint(controlnet_checkpoint_state(p.controlnet), root / "mini_cn.safetensors"),
    }
    # Configs and tokenizer only: single-file loading must take every weight from the checkpoint.
    config_dir = root / "config"
    shutil.copytree(paths.model, config_dir, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return paths, ref, files, config_dir


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return module.state_dict()


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, what: str) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys(), f"{what}: {sorted(set(sa) ^ set(sb))[:5]}"
    differing = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differing, f"{what}: {len(differing)} tensors differ, e.g. {differing[:3]}"


def _generate(pipe, image=None, seed=0):
    kwargs = dict(num_inference_steps=2, height=64, width=64, output_type="np", generator=torch.Generator().manual_seed(seed))
    if image is not None:
        kwargs["image"] = image
    return pipe("a photo of a cat", **kwargs).images


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer and configs
# ----------------------------------------------------------------------------------------------------------------


def test_shipped_clip_tokenizer_gives_standard_ids():
    from transformers import CLIPTokenizer

    folder = tokenizer_data_dir()
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 49408 and sorted(vocab.values()) == list(range(49408))
    assert merges[0].startswith("#version") and len(merges) - 1 == 48894
    assert "MIT" in (folder / "LICENSE").read_text(encoding="utf-8")
    tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.model_max_length == 77
    assert len(tok("word " * 100, truncation=True).input_ids) == 77


def test_sd15_config_describes_the_sd15_architecture(tmp_path):
    from diffusers import AutoencoderKL, ControlNetModel, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = write_sd15_config(tmp_path / "sd15")
    assert StableDiffusionPipeline.load_config(str(folder))["unet"] == ["diffusers", "UNet2DConditionModel"]
    with torch.device("meta"):  # no memory: only shapes
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        cn = ControlNetModel.from_config(controlnet_config_from_unet(dict(unet.config)))

    def count(m):
        return sum(p.numel() for p in m.parameters())

    # Parameter counts of the published SD1.5 UNet, VAE and CLIP ViT-L/14 text encoder.
    assert (count(unet), count(vae), count(text)) == (859_520_964, 83_653_863, 123_060_480)
    assert cn.controlnet_cond_embedding.conv_in.weight.shape == (16, 3, 3, 3)
    assert len(cn.controlnet_down_blocks) == 12
    assert default_sd15_config_dir() == default_sd15_config_dir()  # cached after the first call
    assert (default_sd15_config_dir() / "tokenizer" / "vocab.json").is_file()
    assert SD15_UNET["cross_attention_dim"] == SD15_TEXT_ENCODER["hidden_size"] and SD15_VAE["latent_channels"] == 4


# ----------------------------------------------------------------------------------------------------------------
# Random models and diffusers folders
# ----------------------------------------------------------------------------------------------------------------


def test_random_model_is_deterministic_per_seed(tmp_path):
    a = build_random_model(tmp_path / "a", size="tiny", control_kinds=("depth",), seed=7)
    b = build_random_model(tmp_path / "b", size="tiny", control_kinds=("depth",), seed=7)
    c = build_random_model(tmp_path / "c", size="tiny", control_kinds=("depth",), seed=8)
    rel = ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"]
    for r in rel:
        wa, wb, wc = (load_file(str(p.model / r)) for p in (a, b, c))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    cna = load_file(str(a.controlnets["depth"] / "diffusion_pytorch_model.safetensors"))
    cnb = load_file(str(b.controlnets["depth"] / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(cna[k], cnb[k]) for k in cna)
    assert cna["controlnet_mid_block.weight"].abs().sum() > 0  # zero convs are randomised


def test_diffusers_folder_round_trip(tiny_model_dir):
    kinds = ("depth", "normal")
    loaded = load_pipeline(tiny_model_dir.model, [(k, tiny_model_dir.controlnets[k]) for k in kinds])
    assert isinstance(loaded, LoadedPipeline)
    assert type(loaded.pipe).__name__ == "StableDiffusionControlNetPipeline"
    assert type(loaded.pipe.controlnet).__name__ == "MultiControlNetModel"
    assert loaded.control_kinds == list(kinds)
    assert loaded.random_weights and "RANDOM" in loaded.description and str(tiny_model_dir.model) in loaded.description
    assert loaded.pipe.safety_checker is None
    files = {
        "unet": tiny_model_dir.model / "unet" / "diffusion_pytorch_model.safetensors",
        "vae": tiny_model_dir.model / "vae" / "diffusion_pytorch_model.safetensors",
    }
    for name, f in files.items():
        saved = load_file(str(f))
        got = getattr(loaded.pipe, name).state_dict()
        assert saved.keys() == got.keys() and all(torch.equal(saved[k], got[k]) for k in saved)
    for i, kind in enumerate(kinds):
        saved = load_file(str(tiny_model_dir.controlnets[kind] / "diffusion_pytorch_model.safetensors"))
        got = loaded.pipe.controlnet.nets[i].state_dict()
        assert all(torch.equal(saved[k], got[k]) for k in saved)
    # The latent space is /8 like SD, and the control image matters.
    assert loaded.pipe.vae_scale_factor == 8
    one = load_pipeline(tiny_model_dir.model, [("depth", tiny_model_dir.controlnets["depth"])])
    assert type(one.pipe.controlnet).__name__ == "ControlNetModel"
    black = torch.zeros(1, 3, 64, 64)
    white = torch.ones(1, 3, 64, 64)
    a, b = _generate(one.pipe, black), _generate(one.pipe, white)
    assert a.shape == (1, 64, 64, 3) and np.isfinite(a).all()
    assert np.abs(a - b).max() > 1e-3
    assert np.array_equal(a, _generate(one.pipe, black))


def test_plain_pipeline_without_controlnets(tiny_model_dir):
    loaded = load_pipeline(tiny_model_dir.model, dtype="bfloat16")
    assert type(loaded.pipe).__name__ == "StableDiffusionPipeline" and loaded.control_kinds == []
    assert loaded.pipe.unet.dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------------------------
# Single-file (original LDM layout) checkpoints
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["safetensors", "ckpt"])
def test_single_file_round_trip_is_bit_exact(mini, fmt):
    paths, ref, files, config_dir = mini
    got = load_pipeline(files[fmt], [("depth", files["controlnet"])], config_dir=config_dir)
    assert not got.random_weights and "single-file" in got.description
    assert got.control_kinds == ["depth"]
    for name in ("unet", "vae", "text_encoder", "controlnet"):
        _assert_same_weights(getattr(ref.pipe, name), getattr(got.pipe, name), name)
    assert got.pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_single_file_with_generated_config_folder(mini, tmp_path):
    """write_pipeline_config (the writer of the default SD1.5 folder) makes a folder from_single_file accepts."""
    from neurender.models.random_models import SIZES

    _, ref, files, _ = mini
    spec = SIZES["mini"]
    folder = write_pipeline_config(tmp_path / "cfg", spec.unet, spec.vae, spec.text)
    assert not list(folder.rglob("*.safetensors"))
    got = load_pipeline(files["safetensors"], config_dir=folder)
    for name in ("unet", "vae", "text_encoder"):
        _assert_same_weights(getattr(ref.pipe, name), getattr(got.pipe, name), name)


def test_single_file_controlnet_on_folder_model(mini):
    paths, ref, files, _ = mini
    got = load_pipeline(paths.model, [("edges", files["controlnet"])])
    _assert_same_weights(ref.pipe.controlnet, got.pipe.controlnet, "controlnet")


def test_ldm_export_names_match_real_sd15_layout(mini):
    _, ref, files, _ = mini
    keys = set(load_file(str(files["safetensors"])))
    for key in (  # names as in v1-5-pruned.safetensors
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",
        "model.diffusion_model.output_blocks.5.2.conv.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "first_stage_model.encoder.mid.attn_1.proj_out.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
    ):
        assert key in keys, key
    shapes = {k: tuple(v.shape) for k, v in load_file(str(files["safetensors"])).items() if "mid.attn_1.q" in k}
    assert shapes["first_stage_model.encoder.mid.attn_1.q.weight"] == (64, 64, 1, 1)
    cn_keys = set(load_file(str(files["controlnet"])))
    assert {"control_model.input_hint_block.14.weight", "control_model.zero_convs.11.0.weight",
            "control_model.middle_block_out.0.weight"} <= cn_keys


# ----------------------------------------------------------------------------------------------------------------
# LoRA
# ----------------------------------------------------------------------------------------------------------------


def test_lora_changes_output_and_weight_zero_equals_none(tiny_model_dir, tmp_path):
    lora = build_random_lora(tiny_model_dir.model, tmp_path / "style.safetensors", rank=4, seed=1)
    base = _generate(load_pipeline(tiny_model_dir.model).pipe)
    full = load_pipeline(tiny_model_dir.model, loras=[LoraSpec(str(lora), 1.0)])
    assert "style.safetensors@1" in full.description
    with_lora = _generate(full.pipe)
    zero = _generate(load_pipeline(tiny_model_dir.model, loras=[LoraSpec(str(lora), 0.0)]).pipe)
    half = _generate(load_pipeline(tiny_model_dir.model, loras=[LoraSpec(str(lora), 0.5)]).pipe)
    assert np.abs(with_lora - base).max() > 1e-2
    assert np.array_equal(zero, base)
    assert 0 < np.abs(half - base).max() < np.abs(with_lora - base).max()


# ----------------------------------------------------------------------------------------------------------------
# Errors: one ModelLoadError sentence naming the file
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, mini):
    root = tmp_path_factory.mktemp("bad")
    _, _, files, _ = mini
    data = files["safetensors"].read_bytes()
    out = {
        "truncated": root / "truncated.safetensors",
        "garbage": root / "garbage.safetensors",
        "corrupt_ckpt": root / "corrupt.ckpt",
        "wrong_ext": root / "model.gguf",
        "empty_dir": root / "empty",
        "lora_txt": root / "style.txt",
    }
    out["truncated"].write_bytes(data[: len(data) // 2])
    out["garbage"].write_bytes(b"\x00\x10" * 50)
    out["corrupt_ckpt"].write_bytes(files["ckpt"].read_bytes()[:4000])
    out["wrong_ext"].write_bytes(b"GGUF")
    out["empty_dir"].mkdir()
    out["lora_txt"].write_text("not a lora")
    return out


def _error_cases(tiny, mini_files, mini_paths, bad):
    cn = tiny.controlnets["depth"]
    return [
        (dict(model=tiny.model.parent / "nope"), ["nope", "does not exist"]),
        (dict(model=bad["empty_dir"]), ["empty", "model_index.json"]),
        (dict(model=bad["wrong_ext"]), ["model.gguf", ".gguf", ".safetensors"]),
        (dict(model=bad["truncated"]), ["truncated.safetensors", "truncated"]),
        (dict(model=bad["garbage"]), ["garbage.safetensors", "not a valid .safetensors"]),
        (dict(model=bad["corrupt_ckpt"]), ["corrupt.ckpt", "not a readable PyTorch checkpoint"]),
        (dict(model=cn), ["controlnet-depth", "is a ControlNet folder"]),
        (dict(model=mini_files["controlnet"]), ["mini_cn.safetensors", "is a ControlNet"]),
        (dict(model=mini_files["safetensors"]), ["mini.safetensors", "expects 4 -> 320"]),  # default SD1.5 config
        (dict(model=tiny.model, controlnets=[("depth", tiny.model)]), ["'depth'", "is a Stable Diffusion model folder"]),
        (dict(model=tiny.model, controlnets=[("depth", mini_files["safetensors"])]),
         ["mini.safetensors", "is a Stable Diffusion checkpoint, not a ControlNet"]),
        (dict(model=tiny.model, controlnets=[("edges", tiny.model.parent / "missing-cn")]), ["missing-cn", "does not exist"]),
        (dict(model=tiny.model, controlnets=[("depth", mini_paths.controlnets["depth"])]),
         ["controlnet-depth", "does not fit the model's UNet", "block channels"]),
        (dict(model=tiny.model, controlnets=[("depth", mini_files["controlnet"])]),
         ["mini_cn.safetensors", "down-block outputs"]),
        (dict(model=tiny.model, controlnets=[("depth", bad["truncated"])]), ["truncated.safetensors"]),
        (dict(model=tiny.model, loras=[LoraSpec(str(mini_files["safetensors"]), 1.0)]), ["mini.safetensors", "no LoRA tensors"]),
        (dict(model=tiny.model, loras=[LoraSpec(str(bad["lora_txt"]), 1.0)]), ["style.txt", ".safetensors"]),
        (dict(model=tiny.model, loras=[LoraSpec(str(bad["garbage"]), 1.0)]), ["garbage.safetensors"]),
        (dict(model=tiny.model, loras=[LoraSpec(str(tiny.model / "x.safetensors"), 1.0)]), ["x.safetensors", "does not exist"]),
    ]


def test_each_bad_input_gives_one_clear_model_load_error(tiny_model_dir, mini, bad_files):
    paths, _, files, _ = mini
    for kwargs, fragments in _error_cases(tiny_model_dir, files, paths, bad_files):
        with pytest.raises(ModelLoadError) as err:
            load_pipeline(**kwargs)
        msg = str(err.value)
        assert "\n" not in msg and len(msg) < 500, msg
        for fragment in fragments:
            assert fragment in msg, (kwargs, msg)


def test_lora_for_another_model_is_refused(tiny_model_dir, mini, tmp_path):
    paths, _, _, _ = mini
    lora = build_random_lora(paths.model, tmp_path / "mini_lora.safetensors")
    with pytest.raises(ModelLoadError, match="mini_lora.safetensors does not fit this model"):
        load_pipeline(tiny_model_dir.model, loras=[LoraSpec(str(lora), 1.0)])


def test_device_and_dtype_errors(tiny_model_dir):
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="'cuda' was requested"):
            load_pipeline(tiny_model_dir.model, device="cuda")
    with pytest.raises(InputError, match="dtype 'float64'"):
        load_pipeline(tiny_model_dir.model, dtype="float64")
    with pytest.raises(InputError, match="device 'tpu'"):
        load_pipeline(tiny_model_dir.model, device="tpu")


# ----------------------------------------------------------------------------------------------------------------
# Cache, demo model, doctor
# ----------------------------------------------------------------------------------------------------------------


def test_pipeline_cache_reloads_only_on_change(tiny_model_dir, tmp_path):
    calls = []

    def fake_loader(model, controlnets, loras, device, dtype, config_dir):
        calls.append((model, tuple(controlnets), tuple(loras)))
        return LoadedPipeline(pipe=object(), control_kinds=[k for k, _ in controlnets], description=str(model))

    cache = PipelineCache(loader=fake_loader)
    assert cache.describe() == {"loaded": False}
    cn = [("depth", tiny_model_dir.controlnets["depth"])]
    a = cache.get(tiny_model_dir.model, cn, [], "cpu", "float32")
    b = cache.get(str(tiny_model_dir.model) + "/", [("depth", str(tiny_model_dir.controlnets["depth"]))], [], "cpu", "float32")
    assert a is b and cache.loads == 1
    c = cache.get(tiny_model_dir.model, cn, [LoraSpec("x.safetensors", 0.5)], "cpu", "float32")
    d = cache.get(tiny_model_dir.model, cn, [LoraSpec("x.safetensors", 0.7)], "cpu", "float32")
    assert c is not a and d is not c and cache.loads == 3
    info = cache.describe()
    assert info["loaded"] and info["controlnets"][0]["kind"] == "depth" and info["loras"][0]["weight"] == 0.7
    cache.free()
    assert cache.describe() == {"loaded": False}
    real = PipelineCache()
    loaded = real.get(tiny_model_dir.model, cn, [], "cpu", "float32")
    assert real.describe()["random_weights"] and loaded.control_kinds == ["depth"]


def test_default_demo_model_is_cached_in_neurender_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURENDER_CACHE", str(tmp_path / "nc"))
    first = default_demo_model()
    assert first.model == tmp_path / "nc" / "random-tiny" / "model"
    stamp = (first.model / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    second = default_demo_model()
    assert second == first
    assert (second.model / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    assert set(second.controlnets) == {"depth", "normal", "edges"}
    marker = first.model / "neurender_random_model.json"  # a model cached by an older version is rebuilt
    marker.write_text('{"version": 0}', encoding="utf-8")
    default_demo_model()
    assert json.loads(marker.read_text(encoding="utf-8"))["version"] > 0
    monkeypatch.delenv("NEURENDER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    from neurender.models.cachedir import cache_root

    assert cache_root() == tmp_path / "xdg" / "neurender"


def test_doctor(tiny_model_dir, mini, bad_files, tmp_path):
    report = environment_report()
    assert report["torch"] == torch.__version__.split("+")[0] or report["torch"] == torch.__version__
    assert report["cuda_available"] == torch.cuda.is_available()
    assert set(report) >= {"python", "diffusers", "transformers", "cuda_devices", "mps_available"}
    _, _, files, config_dir = mini
    lora = build_random_lora(tiny_model_dir.model, tmp_path / "l.safetensors")
    kinds = {
        tiny_model_dir.model: "diffusers-folder",
        tiny_model_dir.controlnets["depth"]: "controlnet-folder",
        files["safetensors"]: "single-file",
        files["ckpt"]: "single-file",
        files["controlnet"]: "controlnet-file",
        lora: "lora-file",
    }
    for path, kind in kinds.items():
        info = inspect_model(path, config_dir=config_dir)  # render's config folder for the mini single files
        assert (info["kind"], info["ok"], info["error"]) == (kind, True, None), info
        assert info["render"].startswith("render ") and str(path) in info["render"], info
    assert inspect_model(tmp_path / "nope")["kind"] == "missing"
    bad = inspect_model(bad_files["truncated"])
    assert not bad["ok"] and "truncated" in bad["error"]
