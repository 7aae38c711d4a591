"""Convert OpenAI CLIP's BPE vocabulary (as shipped in the open_clip_torch wheel) into Hugging Face tokenizer files.

Usage::

    pip download --no-deps open_clip_torch -d /tmp/oc
    python scripts/convert_clip_vocab.py /tmp/oc/open_clip_torch-*.whl backend/neurender/data/clip_tokenizer

The input may be the wheel itself or the extracted ``bpe_simple_vocab_16e6.txt.gz``. The vocabulary is built exactly as
``open_clip/tokenizer.py`` (and OpenAI's ``clip/simple_tokenizer.py``) does: the 256 byte symbols, the same with the
end-of-word marker ``</w>``, one token per merge of the first 48894 merges, then ``<|startoftext|>`` and
``<|endoftext|>`` -> 49408 tokens. The output also gets the MIT licence of open_clip as ``LICENSE`` and a
``tokenizer_config.json`` for ``transformers.CLIPTokenizer``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import zipfile
from pathlib import Path

VOCAB_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # as in CLIP's simple_tokenizer: merges[1 : 49152 - 256 - 2 + 1]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def read_bpe_lines(source: Path) -> tuple[list[str], str | None]:
    """Return the lines of the gzipped BPE file and, when reading a wheel, its licence text."""
    licence = None
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as z:
            raw = gzip.decompress(z.read(VOCAB_MEMBER))
            for name in z.namelist():
                if name.endswith("/LICENSE") and ".dist-info/" in name:
                    licence = z.read(name).decode("utf-8")
    else:
        raw = gzip.decompress(source.read_bytes())
    return raw.decode("utf-8").split("\n"), licence


def convert(lines: list[str]) -> tuple[dict[str, int], list[str]]:
    merges = lines[1 : N_MERGES + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(p) for p in pairs]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, [" ".join(p) for p in pairs]


TOKENIZER_CONFIG = {
    "tokenizer_class": "CLIPTokenizer",
    "model_max_length": 77,
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "do_lower_case": True,
    "errors": "replace",
    "clean_up_tokenization_spaces": True,
}

NOTICE = (
    "vocab.json and merges.txt are converted by scripts/convert_clip_vocab.py from bpe_simple_vocab_16e6.txt.gz,\n"
    "the byte-pair-encoding vocabulary of OpenAI CLIP as redistributed in the open_clip_torch package\n"
    "(https://github.com/mlfoundations/open_clip), under the MIT licence below.\n\n"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="open_clip_torch wheel or bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--license-file", type=Path, help="licence text to ship (default: the wheel's LICENSE)")
    args = ap.parse_args(argv)

    lines, licence = read_bpe_lines(args.source)
    if args.license_file:
        licence = args.license_file.read_text(encoding="utf-8")
    if not licence:
        print("error: no licence text found; pass --license-file", file=sys.stderr)
        return 2
    vocab, merges = convert(lines)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n", encoding="utf-8")
    (out / "LICENSE").write_text(NOTICE + licence, encoding="utf-8")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
