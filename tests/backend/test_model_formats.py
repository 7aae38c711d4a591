"""Model files as artists download them (issue 16): each file is built in code in its real layout.

Official SD1.x .ckpt (Lightning top level, numpy scalars), flat text-encoder keys, malicious/unknown pickles, SDXL and
SD 2.x files, inpainting, LoRA variants (DoRA, LoHa, LoKr, attn-procs without 'unet.'), textual-inversion embeddings,
v-prediction, fp16-only diffusers folders, and ``doctor`` saying what render does.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from neurender.contract import LoraSpec
from neurender.errors import ModelLoadError
from neurender.models.doctor import inspect_model
from neurender.models.loading import load_pipeline
from neurender.models.random_models import build_random_lora, build_random_model
from support.ldm_export import save_checkpoint, save_official_ckpt, sd_checkpoint_state


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURENDER_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """The "mini" random model (SD1.5 topology), its LDM state dict and a weight-less config folder."""
    root = tmp_path_factory.mktemp("mini-formats")
    paths = build_random_model(root / "built", size="mini", control_kinds=(), seed=5)
    ref = load_pipeline(paths.model)
    config_dir = root / "config"
    shutil.copytree(paths.model, config_dir, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return paths, ref, config_dir, root


def _same(a: torch.nn.Module, b: torch.nn.Module, what: str) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), what
    bad = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not bad, f"{what}: {bad[:3]}"


def _clean(msg: str) -> None:
    """What every refusal sentence must be: one line, no ANSI escapes, never torch's weights_only=False advice."""
    assert "\n" not in msg and "\x1b" not in msg, msg
    assert "weights_only" not in msg and "trust the source" not in msg, msg
    assert not re.search(r"\ba [aeiou]", msg), msg  # "a unknown file"


def _refused(fragments, **kwargs) -> str:
    with pytest.raises(ModelLoadError) as err:
        load_pipeline(**kwargs)
    msg = str(err.value)
    _clean(msg)
    for f in fragments:
        assert f in msg, msg
    return msg


# ----------------------------------------------------------------------------------------------------------------
# 1. Official-style .ckpt, malicious and unknown pickles (6. their messages)
# ----------------------------------------------------------------------------------------------------------------


def test_official_lightning_ckpt_loads_bit_exact(mini):
    _, ref, config_dir, root = mini
    p = ref.pipe
    path = save_official_ckpt(sd_checkpoint_state(p.unet, p.vae, p.text_encoder), root / "v1-5-pruned-emaonly.ckpt")
    sys.modules.pop("pytorch_lightning", None)
    got = load_pipeline(path, config_dir=config_dir)
    for name in ("unet", "vae", "text_encoder"):
        _same(getattr(ref.pipe, name), getattr(got.pipe, name), name)
    assert "pytorch_lightning" not in sys.modules  # a stand-in, nothing of Lightning imported or run
    assert inspect_model(path, config_dir=config_dir)["ok"]


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_never_executed_and_named(mini, tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.ones(1)}, "x": _Payload(str(marker))}, evil)
    msg = _refused(["model.ckpt", "posix.system" if os.name == "posix" else "system", "probably malicious"], model=evil)
    assert not marker.exists()
    report = inspect_model(evil)
    assert not report["ok"] and report["error"] == msg == report["render"]
    assert not marker.exists()
    # As an embedding: the same cause, not cut short.
    emb = evil.with_name("EasyNegative.pt")
    shutil.copyfile(evil, emb)
    emb_msg = _refused(["probably malicious", "EasyNegative.pt"], model=mini[0].model, embeddings=[emb])
    assert "posix.system" in emb_msg or "nt.system" in emb_msg
    assert not marker.exists()


class UnknownThing:
    pass


def test_unknown_class_reads_differently_from_malware(tmp_path):
    odd = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.ones(1)}, "meta": UnknownThing()}, odd)
    msg = _refused(["odd.ckpt", "UnknownThing", ".safetensors"], model=odd)
    assert "probably malicious" not in msg
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(odd.read_bytes()[:300])
    msg = _refused(["broken.ckpt", "not a readable PyTorch checkpoint"], model=broken)
    assert "probably malicious" not in msg


# ----------------------------------------------------------------------------------------------------------------
# 2. Text-encoder keys without text_model.
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["safetensors", "ckpt"])
def test_flat_text_encoder_layout_is_remapped(mini, fmt):
    _, ref, config_dir, root = mini
    p = ref.pipe
    state = sd_checkpoint_state(p.unet, p.vae, p.text_encoder, text_layout="flat")
    assert "cond_stage_model.transformer.encoder.layers.0.self_attn.k_proj.weight" in state
    assert not any(".text_model." in k for k in state)
    path = save_checkpoint(state, root / f"flat.{fmt}")
    got = load_pipeline(path, config_dir=config_dir)
    for name in ("unet", "vae", "text_encoder"):
        _same(getattr(ref.pipe, name), getattr(got.pipe, name), name)
    assert "remapped" in inspect_model(path, config_dir=config_dir)["render"]


# ----------------------------------------------------------------------------------------------------------------
# 3. LoRA variants
# ----------------------------------------------------------------------------------------------------------------


def _kohya_names(n: int = 2) -> list[str]:
    return [f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_{x}" for x in "qkv"[:n]]


def test_dora_loha_lokr_are_refused_with_their_format(tiny_model_dir, tmp_path):
    r, d = 4, 32
    dora, loha, lokr = {}, {}, {}
    for name in _kohya_names():
        dora[f"{name}.lora_down.weight"] = torch.randn(r, d)
        dora[f"{name}.lora_up.weight"] = torch.randn(d, r)
        dora[f"{name}.alpha"] = torch.tensor(float(r))
        dora[f"{name}.dora_scale"] = torch.rand(1, d)  # kohya-ss networks/lora.py with DoRA: per input column
        for w in ("hada_w1_a", "hada_w2_a"):
            loha[f"{name}.{w}"] = torch.randn(d, r)
        for w in ("hada_w1_b", "hada_w2_b"):
            loha[f"{name}.{w}"] = torch.randn(r, d)
        loha[f"{name}.alpha"] = torch.tensor(float(r))
        lokr[f"{name}.lokr_w1"] = torch.randn(4, 4)
        lokr[f"{name}.lokr_w2_a"] = torch.randn(8, r)
        lokr[f"{name}.lokr_w2_b"] = torch.randn(r, 8)
        lokr[f"{name}.alpha"] = torch.tensor(float(r))
    files = {}
    for label, state in (("dora", dora), ("loha", loha), ("lokr", lokr)):
        files[label] = tmp_path / f"{label}.safetensors"
        save_file(state, str(files[label]))
    model = tiny_model_dir.model
    _refused(["dora.safetensors", "DoRA", "not supported"], model=model, loras=[LoraSpec(str(files["dora"]), 1.0)])
    _refused(["this LoRA format (LoHa) is not supported"], model=model, loras=[LoraSpec(str(files["loha"]), 1.0)])
    _refused(["this LoRA format (LoKr) is not supported"], model=model, loras=[LoraSpec(str(files["lokr"]), 1.0)])
    for label in files:
        report = inspect_model(files[label])
        assert report["kind"] == "lora-file" and not report["ok"], report


def _generate(pipe, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return pipe("a photo of a cat", num_inference_steps=2, height=64, width=64, output_type="np", generator=g, **kw).images


def test_attn_procs_lora_without_unet_prefix_applies_like_its_peft_twin(tiny_model_dir, tmp_path):
    peft = build_random_lora(tiny_model_dir.model, tmp_path / "peft.safetensors", rank=4, seed=2)
    legacy = {}
    for key, value in load_file(str(peft)).items():
        module, rest = key.removeprefix("unet.").split(".lora_", 1)
        parent, proj = module.rsplit(".", 1) if not module.endswith("to_out.0") else (module[: -len(".to_out.0")], "to_out")
        part = "down" if rest.startswith("A") else "up"
        legacy[f"{parent}.processor.{proj}_lora.{part}.weight"] = value
    assert all(not k.startswith("unet.") for k in legacy)
    old = tmp_path / "pytorch_lora_weights.safetensors"
    save_file(legacy, str(old))
    want = _generate(load_pipeline(tiny_model_dir.model, loras=[LoraSpec(str(peft), 1.0)]).pipe)
    got = _generate(load_pipeline(tiny_model_dir.model, loras=[LoraSpec(str(old), 1.0)]).pipe)
    base = _generate(load_pipeline(tiny_model_dir.model).pipe)
    assert np.abs(want - base).max() > 1e-2
    np.testing.assert_allclose(got, want, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# 4. SDXL / SD 2.x / inpainting / missing parts: refused up front (5. doctor says the same)
# ----------------------------------------------------------------------------------------------------------------


def _zeros(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()}


U = "model.diffusion_model."
SDXL_FILE = {  # names and shapes as in sd_xl_base_1.0.safetensors (a few of its 2515 tensors)
    U + "input_blocks.0.0.weight": (320, 4, 3, 3),
    U + "label_emb.0.0.weight": (1280, 2816),
    U + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
    U + "output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
    "first_stage_model.decoder.conv_in.weight": (512, 4, 3, 3),
    "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
    "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,),
}
SDXL_CONTROLNET = {  # as in an SDXL ControlNet in the original layout, and in diffusers' layout
    "control_model.input_hint_block.0.weight": (16, 3, 3, 3),
    "control_model.label_emb.0.0.weight": (1280, 2816),
    "control_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
    "control_model.zero_convs.0.0.weight": (320, 320, 1, 1),
}
SDXL_CONTROLNET_DIFFUSERS = {
    "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
    "add_embedding.linear_1.weight": (1280, 2816),
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
    "conv_in.weight": (320, 4, 3, 3),
}
SD2_FILE = {
    U + "input_blocks.0.0.weight": (320, 4, 3, 3),
    U + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
    "first_stage_model.decoder.conv_in.weight": (512, 4, 3, 3),
    "cond_stage_model.model.token_embedding.weight": (49408, 1024),
}


def test_sdxl_sd2_and_controlnets_refused_before_any_load(tiny_model_dir, tmp_path, monkeypatch):
    from diffusers import ControlNetModel, StableDiffusionPipeline

    def no_load(*a, **k):
        raise AssertionError("a model was loaded before the up-front check refused the file")

    monkeypatch.setattr(StableDiffusionPipeline, "from_single_file", no_load)
    monkeypatch.setattr(ControlNetModel, "from_single_file", no_load)
    files = {}
    for name, shapes in (("sd_xl_base_1.0", SDXL_FILE), ("cn_sdxl", SDXL_CONTROLNET),
                         ("cn_sdxl_diffusers", SDXL_CONTROLNET_DIFFUSERS), ("v2-1_768", SD2_FILE)):
        files[name] = tmp_path / f"{name}.safetensors"
        save_file(_zeros(shapes), str(files[name]))
    m = _refused(["sd_xl_base_1.0.safetensors", "SDXL", "2048", "not supported"], model=files["sd_xl_base_1.0"])
    assert inspect_model(files["sd_xl_base_1.0"])["render"] == m
    for cn in ("cn_sdxl", "cn_sdxl_diffusers"):
        m = _refused([f"{cn}.safetensors", "SDXL ControlNet", "2048"], model=tiny_model_dir.model,
                     controlnets=[("depth", files[cn])])
        assert not inspect_model(files[cn])["ok"] and "SDXL ControlNet" in inspect_model(files[cn])["render"]
    m = _refused(["v2-1_768.safetensors", "SD 2.x", "1024"], model=files["v2-1_768"])
    assert inspect_model(files["v2-1_768"])["render"] == m


def test_inpainting_and_incomplete_checkpoints_refused_by_render_and_doctor(mini, tmp_path):
    _, ref, config_dir, _ = mini
    p = ref.pipe
    state = sd_checkpoint_state(p.unet, p.vae, p.text_encoder)
    conv = state[U + "input_blocks.0.0.weight"]
    inpaint = dict(state, **{U + "input_blocks.0.0.weight": torch.zeros(conv.shape[0], 9, *conv.shape[2:])})
    no_vae = {k: v for k, v in state.items() if not k.startswith("first_stage_model.")}
    no_text = {k: v for k, v in state.items() if not k.startswith("cond_stage_model.")}
    cases = {
        "inpaint": (inpaint, ["inpainting", "9 input channels"]),
        "unet_vae_only": (no_text, ["no text encoder"]),
        "no_vae": (no_vae, ["no VAE"]),
    }
    for name, (st, fragments) in cases.items():
        path = save_checkpoint(st, tmp_path / f"{name}.safetensors")
        msg = _refused([f"{name}.safetensors", *fragments], model=path, config_dir=config_dir)
        assert "config folder" not in msg  # no advice to pass an option that does not exist
        report = inspect_model(path, config_dir=config_dir)
        assert not report["ok"] and report["render"] == msg, report


def test_doctor_cli_reports_render_sentence(tmp_path, capsys):
    from neurender.cli import main

    path = tmp_path / "sd_xl_base_1.0.safetensors"
    save_file(_zeros(SDXL_FILE), str(path))
    assert main(["doctor", "--model", str(path)]) == 2
    out = capsys.readouterr().out
    assert "REFUSED" in out and "SDXL" in out and "2048" in out


# ----------------------------------------------------------------------------------------------------------------
# 7. Textual-inversion embeddings, v-prediction, fp16-only folders
# ----------------------------------------------------------------------------------------------------------------


def _write_embeddings(folder, width, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pt = torch.randn(n, width, generator=g)
    st = torch.randn(2, width, generator=g)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": pt.clone().requires_grad_(True)},
                "name": "EasyNegative", "step": 1500, "sd_checkpoint": "81761151", "sd_checkpoint_name": "v1-5"},
               folder / "EasyNegative.pt")  # AUTOMATIC1111 .pt
    save_file({"emb_params": st}, str(folder / "bad-hands-5.safetensors"))  # AUTOMATIC1111 .safetensors
    return pt, st


def test_a1111_embeddings_usable_in_prompt_and_negative_prompt(tiny_model_dir, tmp_path):
    base = load_pipeline(tiny_model_dir.model).pipe
    width = base.text_encoder.get_input_embeddings().weight.shape[1]
    pt, st = _write_embeddings(tmp_path / "embeddings", width)
    loaded = load_pipeline(tiny_model_dir.model, embeddings=[tmp_path / "embeddings"])
    assert loaded.embedding_tokens == ["easynegative", "bad-hands-5"]
    pipe = loaded.pipe
    ids = pipe.tokenizer(pipe.maybe_convert_prompt("a cat, EasyNegative, bad-hands-5", pipe.tokenizer)).input_ids
    table = pipe.text_encoder.get_input_embeddings().weight
    added = [i for i in ids if i >= base.tokenizer.vocab_size]
    assert len(added) == 5  # every vector of both files, in prompt order
    torch.testing.assert_close(table[added].detach(), torch.cat([pt, st]))
    with torch.no_grad():
        plain = pipe.encode_prompt("a cat", "cpu", 1, True, "")
        neg = pipe.encode_prompt("a cat", "cpu", 1, True, "EasyNegative")
        pos = pipe.encode_prompt("a cat EasyNegative", "cpu", 1, True, "")
    assert torch.equal(plain[0], neg[0]) and not torch.equal(plain[1], neg[1])
    assert not torch.equal(plain[0], pos[0])
    a = _generate(pipe, negative_prompt="EasyNegative")
    b = _generate(pipe, negative_prompt="")
    assert np.abs(a - b).max() > 1e-4
    assert inspect_model(tmp_path / "embeddings" / "EasyNegative.pt")["kind"] == "embedding-file"


def test_embedding_errors(tiny_model_dir, tmp_path):
    wide = tmp_path / "sd2.safetensors"
    save_file({"emb_params": torch.randn(2, 1024)}, str(wide))
    _refused(["sd2.safetensors", "width 1024", "SD 2.x"], model=tiny_model_dir.model, embeddings=[wide])
    _refused(["nope.pt", "does not exist"], model=tiny_model_dir.model, embeddings=[tmp_path / "nope.pt"])
    xl = tmp_path / "xl.safetensors"
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, str(xl))
    _refused(["xl.safetensors", "SDXL"], model=tiny_model_dir.model, embeddings=[xl])


def test_v_prediction_from_yaml_or_setting(mini, tmp_path):
    _, ref, config_dir, _ = mini
    p = ref.pipe
    path = save_checkpoint(sd_checkpoint_state(p.unet, p.vae, p.text_encoder), tmp_path / "vpred.safetensors")
    assert load_pipeline(path, config_dir=config_dir).pipe.scheduler.config.prediction_type == "epsilon"
    (tmp_path / "vpred.yaml").write_text(
        "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n    parameterization: \"v\"\n"
        "    linear_start: 0.00085\n", encoding="utf-8")
    got = load_pipeline(path, config_dir=config_dir)
    assert got.prediction_type == "v_prediction" and got.pipe.scheduler.config.prediction_type == "v_prediction"
    assert "v_prediction" in inspect_model(path, config_dir=config_dir)["render"]
    from neurender.engine.schedulers import make_scheduler

    assert make_scheduler("dpmpp_2m", got.pipe.scheduler.config).config.prediction_type == "v_prediction"
    forced = load_pipeline(path, config_dir=config_dir, prediction_type="epsilon")
    assert forced.pipe.scheduler.config.prediction_type == "epsilon"


def test_fp16_only_diffusers_folder_loads(tiny_model_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    ref = load_pipeline(tiny_model_dir.model).pipe
    folder = tmp_path / "fp16-only"
    ref.save_pretrained(folder, variant="fp16", safe_serialization=True)
    assert list(folder.glob("unet/*.fp16.safetensors")) and not list(folder.glob("unet/*model.safetensors"))
    with pytest.raises(Exception):  # what diffusers does without being told
        StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    got = load_pipeline(folder)
    for name in ("unet", "vae", "text_encoder"):
        _same(getattr(ref, name), getattr(got.pipe, name), name)
    assert "fp16" in inspect_model(folder)["render"]
