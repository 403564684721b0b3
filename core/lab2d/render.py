"""Pictures of point clouds without Qt (the CLI's PNG and GIF): data in grey, particles in colour, trajectories as
thin polylines, on the square [−extent, extent]² with y up, and the N(0, I) circles of radius 1 and 2."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

EXTENT = 3.5
COLORS = {"ddpm": (31, 119, 180), "ddim": (214, 39, 40), "dpmpp2m": (44, 160, 44)}
DATA_COLOR, TRAIL_ALPHA = (190, 190, 190), 70


def _to_px(xy, size: int, extent: float) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64)
    return np.stack([(xy[..., 0] + extent) / (2 * extent) * size, (extent - xy[..., 1]) / (2 * extent) * size], -1)


def scatter_image(data, particles=None, trail=None, color=(31, 119, 180), size: int = 480,
                  extent: float = EXTENT, caption: str = "") -> np.ndarray:
    """An H×W×3 uint8 picture: data points, optional trajectories (steps × K × 2) and particles (N × 2)."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img, "RGBA")
    c = size / 2
    for r in (1.0, 2.0):
        rp = r / (2 * extent) * size
        d.ellipse([c - rp, c - rp, c + rp, c + rp], outline=(200, 200, 200))
    for x, y in _to_px(data, size, extent):
        d.rectangle([x - 1, y - 1, x, y], fill=DATA_COLOR)
    if trail is not None and len(trail) > 1:
        tp = _to_px(trail, size, extent)
        for k in range(tp.shape[1]):
            d.line([tuple(p) for p in tp[:, k]], fill=(*color, TRAIL_ALPHA), width=1)
    if particles is not None:
        for x, y in _to_px(particles, size, extent):
            d.rectangle([x - 1, y - 1, x + 1, y + 1], fill=color)
    if caption:
        d.text((6, 4), caption, fill=(0, 0, 0))
    return np.asarray(img)


def arrow_segments(xy, vec, cell: float, head: float = 0.3) -> np.ndarray:
    """Line segments (2K×2, pairs of end points, for a ``connect="pairs"`` curve) of arrows at grid points ``xy``
    along ``vec``: lengths scaled so the 95th-percentile arrow spans 0.9 of a cell (longer ones capped there),
    each with a two-stroke head of ``head`` × its length."""
    xy, v = np.asarray(xy, np.float64), np.asarray(vec, np.float64)
    norm = np.linalg.norm(v, axis=1)
    ok = np.isfinite(norm) & (norm > 0)
    ref = np.percentile(norm[ok], 95) if ok.any() else 1.0
    length = 0.9 * cell * np.minimum(norm / max(ref, 1e-12), 1.0)
    u = np.where(ok[:, None], v / np.where(ok, norm, 1.0)[:, None], 0.0)
    tip = xy + u * length[:, None]
    back = -u * (head * length)[:, None]
    c, s = np.cos(0.5), np.sin(0.5)
    left = np.stack([c * back[:, 0] - s * back[:, 1], s * back[:, 0] + c * back[:, 1]], 1)
    right = np.stack([c * back[:, 0] + s * back[:, 1], -s * back[:, 0] + c * back[:, 1]], 1)
    seg = np.stack([xy, tip, tip, tip + left, tip, tip + right], 1)     # K × 6 × 2
    return seg[ok].reshape(-1, 2)
