"""A word-level CLIP tokenizer over the captions' vocabulary (:func:`core.latent.captions.vocabulary`), written
as ``vocab.json`` + ``merges.txt`` so that transformers' ``CLIPTokenizer`` loads it like any SD tokenizer.

CLIP's tokenizer is byte-level BPE: a word is split into byte symbols (the last one marked ``</w>``) and merged
pair by pair in the order of ``merges.txt``. Here the vocabulary holds

- the 256 byte symbols alone and word-final (so *any* text still tokenizes, letter by letter),
- each caption word whole (``seven</w>``) with the chain of merges that builds it left to right
  (``s e``, ``se v``, ``sev e``, ``seve n</w>``) — and its intermediate prefixes, so every merge result is a token,
- ``<|startoftext|>`` and ``<|endoftext|>`` (also the padding token, as in SD 1.x).

:func:`write_tokenizer` checks that every caption word comes out as one token (BPE applies merges by rank over the
whole word, so one word's chain could in principle cut into another's; it does not for this vocabulary).
"""
from __future__ import annotations

import json
from pathlib import Path

from core.latent.captions import vocabulary

MAX_LENGTH = 16  # tokens, <|startoftext|> and <|endoftext|> included; the longest caption has 7


def byte_symbols() -> list[str]:
    """GPT-2/CLIP's table of the 256 bytes → printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def merges_for(words) -> list[str]:
    """Left-to-right merge chains that build each word (``</w>`` on the last symbol), without repeats."""
    merges = []
    for w in sorted(words, key=len, reverse=True):  # longer words' chains first: no shorter chain cuts into them
        if len(w) < 2:
            continue
        prefix = w[0]
        for i, ch in enumerate(w[1:], start=1):
            right = ch + ("</w>" if i == len(w) - 1 else "")
            merges.append(f"{prefix} {right}")
            prefix += right
    return list(dict.fromkeys(merges))


def write_tokenizer(folder, words=None, max_length: int = MAX_LENGTH):
    """Write the tokenizer into ``folder`` (created): vocab.json, merges.txt and transformers' own files
    (``save_pretrained``). Returns the loaded ``CLIPTokenizer``."""
    from transformers import CLIPTokenizer
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = list(words) if words is not None else vocabulary()
    symbols = byte_symbols()
    merges = merges_for(words)
    vocab = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    ids = {tok: i for i, tok in enumerate(dict.fromkeys(vocab))}
    (folder / "vocab.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tok.save_pretrained(str(folder))
    tok = CLIPTokenizer.from_pretrained(str(folder))
    for w in words:
        got = tok(w, add_special_tokens=False).input_ids
        if len(got) != 1:
            raise ValueError(f"the tokenizer splits the caption word {w!r} into {len(got)} tokens")
    return tok
