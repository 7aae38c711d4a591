"""Textual-inversion embeddings (Gal et al. 2022, arXiv 2208.01618): learned word vectors added to the CLIP tokenizer.

Files as artists download them: AUTOMATIC1111 ``.pt`` (``string_to_param["*"]``, ``[n_vectors, 768]``), A1111
``.safetensors`` (``emb_params``) and diffusers ``learned_embeds`` (``{token: vector}``). As in A1111 the word to type
in the prompt or negative prompt is the file name without its extension (``EasyNegative.safetensors`` ->
``EasyNegative``, in any letter case: the CLIP tokenizer lowercases the prompt, so the word is registered lowercased and
the prompt's spelling is folded to it). A multi-vector embedding is expanded into one token per vector by diffusers'
``maybe_convert_prompt`` inside ``encode_prompt``, for the prompt and the negative prompt alike. Loaded with
``load_textual_inversion``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neurender.errors import ModelLoadError, ModelMissing
from neurender.models.checkpoint_files import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, brief

log = logging.getLogger(__name__)

EMBEDDING_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES + (".bin",)


def prompt_word(path: Path) -> str:
    """The prompt word of an embedding file: its name without the extension, in lower case (the tokenizer lowercases
    the prompt)."""
    return Path(path).stem.lower()


def find_embeddings(paths: Sequence[str | Path]) -> list[Path]:
    """The embedding files named by ``paths`` (files, or folders whose embedding files are all taken), checked."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise ModelMissing(f"embedding {p} does not exist; expected a .pt/.safetensors file or a folder of them")
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in EMBEDDING_SUFFIXES)
            files.extend(found)
            if not found:
                log.warning("embeddings folder %s holds no .pt/.safetensors/.bin files", p)
            continue
        if p.suffix.lower() not in EMBEDDING_SUFFIXES:
            raise ModelLoadError(
                f"embedding {p} has the extension {p.suffix or '(none)'!r}; expected .pt, .safetensors or .bin"
            )
        files.append(p)
    seen: dict[str, Path] = {}
    for f in files:
        word = prompt_word(f)
        if word in seen:
            raise ModelLoadError(f"embeddings {seen[word]} and {f} would both be the prompt word '{word}'")
        seen[word] = f
        read_embedding(f)  # refuse a bad file before any model loads
    return files


def _vectors(path: Path, data: Any) -> Any:
    import torch

    if isinstance(data, torch.Tensor):
        return data
    if not isinstance(data, dict):
        raise ModelLoadError(f"embedding {path} does not hold tensors")
    if "clip_l" in data or "clip_g" in data:
        raise ModelLoadError(f"embedding {path} is an SDXL embedding (clip_l/clip_g); it does not fit an SD1.x model")
    if isinstance(data.get("string_to_param"), dict) and data["string_to_param"]:  # A1111 .pt
        return next(iter(data["string_to_param"].values()))
    if "emb_params" in data:  # A1111 .safetensors
        return data["emb_params"]
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(data) == 1 and tensors:  # diffusers learned_embeds
        return tensors[0]
    raise ModelLoadError(
        f"embedding {path} is not a textual-inversion embedding (no 'string_to_param', 'emb_params' or single "
        f"token vector among {', '.join(map(str, list(data)[:5]))})"
    )


def read_embedding(path: Path) -> Any:
    """The embedding's vectors as a ``[n_vectors, width]`` tensor; ``ModelLoadError`` for anything else."""
    from neurender.models import safe_pickle

    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            data = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - safetensors raises several types for a broken file
            raise ModelLoadError(f"embedding {path} is not a readable .safetensors file: {brief(e)}") from e
    else:
        try:
            data = safe_pickle.load(path)
        except ModelLoadError as e:
            raise ModelLoadError(f"embedding {e}") from e
    vectors = _vectors(path, data)
    if vectors.dim() == 1:
        vectors = vectors[None]
    if vectors.dim() != 2 or vectors.shape[0] < 1 or not vectors.is_floating_point():
        raise ModelLoadError(f"embedding {path} holds a tensor of shape {tuple(vectors.shape)}, not word vectors")
    return vectors


def load_embeddings(pipe: Any, files: Sequence[Path]) -> list[str]:
    """Add each embedding to ``pipe``'s tokenizer/text encoder under its file name; returns the prompt words."""
    tokens: list[str] = []
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    for path in files:
        vectors = read_embedding(path)
        if vectors.shape[1] != width:
            hint = {1024: " (an SD 2.x embedding?)", 1280: " (an SDXL embedding?)"}.get(int(vectors.shape[1]), "")
            raise ModelLoadError(
                f"embedding {path} has word vectors of width {vectors.shape[1]} but this model's text encoder uses "
                f"{width}{hint}"
            )
        token = prompt_word(path)
        try:
            pipe.load_textual_inversion(vectors.to(pipe.text_encoder.dtype), token=token)
        except Exception as e:  # noqa: BLE001 - diffusers raises ValueError for a token clash, others for shapes
            raise ModelLoadError(f"embedding {path} could not be added as the prompt word '{token}': {brief(e)}") from e
        tokens.append(token)
        log.info("loaded embedding %s as '%s' (%d vectors)", path, token, vectors.shape[0])
    if tokens:
        _fold_prompt_case(pipe, tokens)
    return tokens


def _fold_prompt_case(pipe: Any, tokens: list[str]) -> None:
    """Make ``maybe_convert_prompt`` find an embedding's word whatever its letter case in the prompt.

    diffusers replaces the word by its ``word word_1 ...`` expansion with a case-sensitive ``str.replace`` after the
    (lowercasing) tokenizer found it, so ``EasyNegative`` would get only the first vector of ``easynegative``.
    """
    original = pipe.maybe_convert_prompt
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)) + r")(?![\w-])",
                         re.IGNORECASE)

    def fold(text: str) -> str:
        return pattern.sub(lambda m: m.group(0).lower(), text)

    def maybe_convert_prompt(prompt: Any, tokenizer: Any) -> Any:
        if isinstance(prompt, str):
            prompt = fold(prompt)
        elif isinstance(prompt, list):
            prompt = [fold(p) if isinstance(p, str) else p for p in prompt]
        return original(prompt, tokenizer)

    pipe.maybe_convert_prompt = maybe_convert_prompt
