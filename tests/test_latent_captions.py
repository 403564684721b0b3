"""Captions from a digit's label and measured attributes, and the word-level CLIP tokenizer over their words."""
from __future__ import annotations

import numpy as np
import pytest

from core.latent import captions as C


def _stroke(width: int, slant: float = 0.0, height: int = 20) -> np.ndarray:
    """A vertical bar 28×28 uint8 of ``width`` px, sheared by ``slant`` px to the right per px of height."""
    im = np.zeros((28, 28), np.uint8)
    top = (28 - height) // 2
    for y in range(top, top + height):
        x0 = int(round(14 - width / 2 + slant * ((top + height / 2) - y)))
        im[y, max(x0, 0):x0 + width] = 255
    return im


def test_thickness_from_ink_area_over_perimeter():
    thin, medium, bold = C.measure(np.stack([_stroke(1), _stroke(2), _stroke(4)]))
    assert thin.stroke_px < C.THIN_BELOW < medium.stroke_px < C.BOLD_ABOVE < bold.stroke_px
    assert (thin.thickness, medium.thickness, bold.thickness) == ("thin", None, "bold")


def test_slant_from_moments():
    right, upright, left = C.measure(np.stack([_stroke(2, 0.5), _stroke(2, 0.0), _stroke(2, -0.4)]))
    assert right.slant == pytest.approx(0.5, abs=0.08) and right.lean == "slanted"
    assert abs(upright.slant) < 0.02 and upright.lean == "upright"
    assert left.slant == pytest.approx(-0.4, abs=0.08) and left.lean == "backslanted"


def test_size_from_bounding_box():
    small, full = C.measure(np.stack([_stroke(2, height=12), _stroke(2, height=20)]))
    assert (small.box_h, full.box_h) == (12, 20)
    assert small.size == "small" and full.size is None
    blank = C.measure(np.zeros((28, 28), np.uint8))[0]
    assert blank.box_h == 0 and blank.size is None and blank.thickness == "thin"


def test_measured_shares_on_the_training_split_match_the_docstring():
    from core.data import load_mnist_arrays
    u8, _ = load_mnist_arrays("train")
    a = C.measure(u8)
    share = lambda key, word: np.mean([getattr(x, key) == word for x in a])  # noqa: E731
    assert 0.15 < share("thickness", "thin") < 0.3 and 0.15 < share("thickness", "bold") < 0.3
    assert 0.18 < share("lean", "slanted") < 0.3 and 0.05 < share("lean", "backslanted") < 0.15
    assert 0.03 < share("size", "small") < 0.1


def test_compose_and_articles():
    assert C.compose("{a} {adj} handwritten {d}", "7") == "a handwritten 7"
    assert C.compose("{a} {adj} {d}", "3", ("bold",)) == "a bold 3"
    assert C.compose("{a} {adj} {d}", "8") == "an 8"
    assert C.compose("{a} {adj} {d}", "eight", ("thin",)) == "a thin eight"
    assert C.compose("{a} {adj} {d}", "1", ("upright",)) == "an upright 1"
    assert C.compose("the {adj} digit {d}", "seven", ("thin", "slanted")) == "the thin slanted digit seven"


def test_captions_are_drawn_from_the_attributes_and_deterministic():
    attrs = C.Attributes(1.2, 0.6, 20, 12, "thin", "slanted", None)
    every = set(C.captions_for(7, attrs))
    assert {"a handwritten 7", "the digit seven", "a thin slanted seven", "7"} <= every
    rng = np.random.default_rng(0)
    drawn = {C.caption(7, attrs, rng) for _ in range(400)}
    assert drawn <= every and len(drawn) > 20
    assert all(("seven" in c) != ("7" in c) for c in drawn)
    draws = np.array([0.1, 0.3, 0.2, 0.9, 0.0])
    assert C.caption(7, attrs, draws=draws) == C.caption(7, attrs, draws=draws) == "a thin 7"
    assert not any("bold" in c for c in drawn)


def test_vocabulary_covers_every_caption_word():
    vocab = set(C.vocabulary())
    attrs = C.Attributes(2.6, -0.3, 15, 15, "bold", "backslanted", "small")
    for d in range(10):
        for c in C.captions_for(d, attrs):
            assert set(c.split()) <= vocab, c


def test_word_level_tokenizer(tmp_path):
    from transformers import CLIPTokenizer
    from core.latent.tokenizer import MAX_LENGTH, write_tokenizer
    write_tokenizer(tmp_path / "tok")
    assert (tmp_path / "tok" / "vocab.json").is_file() and (tmp_path / "tok" / "merges.txt").is_file()
    tok = CLIPTokenizer(str(tmp_path / "tok" / "vocab.json"), str(tmp_path / "tok" / "merges.txt"),
                        model_max_length=MAX_LENGTH)
    for word in C.vocabulary():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    ids = tok("A Thin slanted SEVEN", padding="max_length", max_length=MAX_LENGTH).input_ids
    assert len(ids) == MAX_LENGTH and ids[0] == tok.bos_token_id and ids[5] == tok.eos_token_id
    assert ids[1:5] == [tok.convert_tokens_to_ids(w + "</w>") for w in ("a", "thin", "slanted", "seven")]
    # an unknown word still tokenizes (letter by letter), as CLIP's byte-level BPE does
    assert len(tok("zebra", add_special_tokens=False).input_ids) >= 2
    longest = max((c for d in range(10) for c in C.captions_for(d, C.Attributes(1, 1, 1, 1, "thin", "slanted",
                                                                                "small"))), key=len)
    assert len(tok(longest).input_ids) <= MAX_LENGTH
