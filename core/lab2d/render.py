"""Pictures of point clouds without Qt (the CLI's PNG and GIF): data in grey, particles in colour, trajectories as
thin polylines, on the square [−extent, extent]² with y up, and the N(0, I) circles of radius 1 and 2."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

EXTENT = 3.5
COLORS = {"ddpm": (31, 119, 180), "ddim": (214, 39, 40), "dpmpp2m": (44, 160, 44)}
DATA_COLOR, TRAIL_ALPHA = (150, 150, 150), 70


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
        d.point((x, y), fill=DATA_COLOR)
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
