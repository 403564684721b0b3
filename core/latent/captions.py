"""Captions for the built-in digits, from each digit's label and three measured attributes — the text that
``builtin:mnist-sd``'s CLIP text encoder and UNet learn from (``ddpm train-sd``).

Attributes, measured on the 28×28 digit (uint8, ink bright on black) by :func:`measure`:

- **stroke thickness** from the ink area: the binarised digit (pixels ≥ 128) has ink area A and boundary length P
  (pixel edges between ink and background). A ribbon of width w and length L has A ≈ w·L and P ≈ 2L, so
  w ≈ 2A/P, in pixels, nearly the same for every digit class (median 1.9 px on the training split).
  ``thin`` when w < :data:`THIN_BELOW` (1.6 px, 21% of the training digits), ``bold`` when
  w > :data:`BOLD_ABOVE` (2.4 px, 19%).
- **slant** from the image moments: with intensity-weighted central moments μ11 and μ02 (x right, y down), the
  shear s = −μ11/μ02 is how far the digit leans right per pixel of height (s = tan of the lean angle).
  ``slanted`` when s > :data:`SLANTED_ABOVE` (0.35, leaning right by more than about 19°, 23% of the digits),
  ``upright`` when |s| < :data:`UPRIGHT_WITHIN` (0.1, 25%), ``backslanted`` when s < −:data:`BACK_BELOW`
  (−0.2, leaning left, 11%).
- **size** from the bounding box of the pixels > 0.2 (of 1): MNIST fits each digit's larger side to 20 px, so
  the height is 20 px for most digits; ``small`` when the box is at most :data:`SMALL_AT_MOST` (17) px tall
  (6% of the training digits).

A digit has at most one word per attribute, or none (a medium stroke, a slight lean). :func:`caption` draws one
caption from a digit's label and attributes with a random stream: the digit as a numeral ("7") or a word
("seven") and one of the templates :data:`TEMPLATES`, each measured attribute kept with probability ½ — e.g.
"a handwritten 7", "the digit seven", "a thin slanted seven", "a bold 3", "an 8". :func:`vocabulary` lists every
word a caption can hold (the tokenizer's vocabulary, :mod:`core.latent.tokenizer`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THIN_BELOW, BOLD_ABOVE = 1.6, 2.4
SLANTED_ABOVE, UPRIGHT_WITHIN, BACK_BELOW = 0.35, 0.1, 0.2
SMALL_AT_MOST = 17
INK_THRESHOLD = 128
BOX_THRESHOLD = 0.2

THICKNESS = ("thin", "bold")
SLANT = ("slanted", "upright", "backslanted")
SIZE = ("small",)

# {a} is the article ("a"/"an") of the word that follows it; {adj} the kept attributes (may be empty);
# {d} the digit (numeral or word). Double spaces left by an empty {adj} are collapsed.
TEMPLATES = (
    "{a} {adj} handwritten {d}",
    "{a} {adj} {d}",
    "the {adj} digit {d}",
    "{a} {adj} digit {d}",
    "the number {d}",
    "{d}",
)
EXTRA_WORDS = ("a", "an", "the", "handwritten", "digit", "number")


@dataclass(frozen=True)
class Attributes:
    """One digit's measurements and the words they give (``None`` where the digit is in between)."""

    stroke_px: float
    slant: float
    box_h: int
    box_w: int
    thickness: str | None
    lean: str | None
    size: str | None

    def words(self) -> tuple[str, ...]:
        return tuple(w for w in (self.size, self.thickness, self.lean) if w)


def measure_arrays(u8: np.ndarray) -> dict[str, np.ndarray]:
    """Raw measurements of digits N×28×28 uint8: ``stroke_px`` (2A/P), ``slant`` (−μ11/μ02), ``box_h``,
    ``box_w`` — vectorised, for the whole data set at once."""
    u8 = np.asarray(u8)
    if u8.ndim == 2:
        u8 = u8[None]
    f = u8.astype(np.float64) / 255.0
    b = u8 >= INK_THRESHOLD
    area = b.sum((1, 2))
    perim = ((b[:, 1:, :] != b[:, :-1, :]).sum((1, 2)) + (b[:, :, 1:] != b[:, :, :-1]).sum((1, 2))
             + b[:, 0, :].sum(1) + b[:, -1, :].sum(1) + b[:, :, 0].sum(1) + b[:, :, -1].sum(1))
    stroke = 2.0 * area / np.maximum(perim, 1)
    h, w = f.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.maximum(f.sum((1, 2)), 1e-9)
    cx = (f * xx).sum((1, 2)) / m
    cy = (f * yy).sum((1, 2)) / m
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    mu11 = (f * dx * dy).sum((1, 2)) / m
    mu02 = (f * dy * dy).sum((1, 2)) / m
    slant = -mu11 / np.maximum(mu02, 1e-9)
    rows, cols = np.any(f > BOX_THRESHOLD, 2), np.any(f > BOX_THRESHOLD, 1)
    any_ink = rows.any(1)
    box_h = np.where(any_ink, h - np.argmax(rows[:, ::-1], 1) - np.argmax(rows, 1), 0)
    box_w = np.where(any_ink, w - np.argmax(cols[:, ::-1], 1) - np.argmax(cols, 1), 0)
    return {"stroke_px": stroke, "slant": slant, "box_h": box_h, "box_w": box_w}


def words_for(stroke_px: float, slant: float, box_h: int, box_w: int) -> tuple[str | None, str | None, str | None]:
    """(thickness, lean, size) words for one digit's measurements, by the thresholds of the module docstring."""
    thickness = "thin" if stroke_px < THIN_BELOW else "bold" if stroke_px > BOLD_ABOVE else None
    lean = ("slanted" if slant > SLANTED_ABOVE else "upright" if abs(slant) < UPRIGHT_WITHIN
            else "backslanted" if slant < -BACK_BELOW else None)
    size = "small" if 0 < box_h <= SMALL_AT_MOST else None
    return thickness, lean, size


def measure(u8: np.ndarray) -> list[Attributes]:
    """Each digit of N×28×28 uint8 (or one 28×28) → its :class:`Attributes`."""
    m = measure_arrays(u8)
    out = []
    for s, sl, bh, bw in zip(m["stroke_px"], m["slant"], m["box_h"], m["box_w"]):
        out.append(Attributes(float(s), float(sl), int(bh), int(bw), *words_for(float(s), float(sl), int(bh), int(bw))))
    return out


def article(word: str) -> str:
    """"an" before a vowel sound ("an eight", "an 8", "an upright 1"), else "a"."""
    return "an" if word[:1] in "aeiou8" else "a"


def compose(template: str, digit: str, adjectives: tuple[str, ...] = ()) -> str:
    """Fill one template: ``digit`` is the numeral or the word, ``adjectives`` the attribute words kept."""
    adj = " ".join(adjectives)
    following = (adj or (template.split("{adj}", 1)[1].split()[0] if "{adj}" in template else digit))
    if following == "{d}":
        following = digit
    text = template.format(a=article(following), adj=adj, d=digit)
    return " ".join(text.split())


def caption(label: int, attrs: Attributes | None, rng: np.random.Generator | None = None,
            draws: np.ndarray | None = None) -> str:
    """One random caption for a digit. Randomness comes from ``draws`` (uniforms in [0, 1), at least
    :data:`DRAWS` of them: the training loop takes them from its own seeded stream, so a resumed run draws the
    same captions) or else from ``rng``."""
    if draws is None:
        draws = (rng or np.random.default_rng()).random(DRAWS)
    u = [float(v) for v in draws]
    digit = str(int(label)) if u[0] < 0.5 else DIGIT_WORDS[int(label)]
    template = TEMPLATES[min(int(u[1] * len(TEMPLATES)), len(TEMPLATES) - 1)]
    kept: tuple[str, ...] = ()
    if attrs is not None and "{adj}" in template:
        words = attrs.words()
        kept = tuple(w for w, v in zip(words, u[2:2 + len(words)]) if v < 0.5)
    return compose(template, digit, kept)


DRAWS = 5  # uniforms one caption uses: numeral/word, template, and one per attribute (at most 3)


def captions_for(label: int, attrs: Attributes | None = None) -> list[str]:
    """Every caption :func:`caption` can give a digit (for the tests and the vocabulary)."""
    words = attrs.words() if attrs is not None else ()
    subsets = [tuple(w for i, w in enumerate(words) if mask >> i & 1) for mask in range(2 ** len(words))]
    out = []
    for digit in (str(int(label)), DIGIT_WORDS[int(label)]):
        for template in TEMPLATES:
            for kept in (subsets if "{adj}" in template else [()]):
                out.append(compose(template, digit, kept))
    return list(dict.fromkeys(out))


def vocabulary() -> list[str]:
    """Every word a caption can contain, in a fixed order: the template words, the attribute words, the digit
    words and the numerals 0–9."""
    return list(dict.fromkeys(EXTRA_WORDS + SIZE + THICKNESS + SLANT + DIGIT_WORDS + tuple(str(d) for d in range(10))))


EXAMPLE_PROMPTS = ("a handwritten 7", "the digit seven", "a thin slanted seven", "a bold 3", "a small 2",
                   "an upright 1", "")
