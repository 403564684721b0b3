"""A grid's exports: one record per cell (JSON, CSV), the labelled PNG and the npz of every cell's images.

Every export carries every cell of the plan, in row-major order (page, row, column): finished cells with their
settings and scores, invalid ones with their reason, and cells a cancelled run did not reach as ``not run``."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from core.atomic import atomic_path
from core.compare.engine import GridRun, sample_args
from core.compare.scores import SCORES
from core.images import batch_grid, save_image
from core.messages import json_text

NOT_RUN = "not run"
RAN_KEYS = ("model", "sampler", "steps", "eta", "guidance", "class", "seed", "n", "spacing", "variance", "schedule",
            "T")


def cell_records(run: GridRun) -> list[dict]:
    """One dict per cell: position, the grid axes' values, status (done | invalid | not run), reason, what ran,
    notes, scores and the ``ddpm sample`` command that runs it alone."""
    out = []
    for cell, res in zip(run.plan.cells, run.results):
        rec = {"index": cell.index, "page": cell.page, "row": cell.row, "col": cell.col,
               "axes": dict(cell.axes), "status": res.status if res is not None else NOT_RUN,
               "reason": res.reason if res is not None else None,
               "settings": dict(res.ran) if res is not None and res.ran else
               {k: v for k, v in cell.settings.items()},
               "notes": list(res.notes) if res is not None else [],
               "scores": dict(res.scores) if res is not None else {}}
        args = sample_args(res) if res is not None else None
        rec["ddpm_sample"] = None if args is None else "ddpm sample " + " ".join(_quote(a) for a in args)
        out.append(rec)
    return out


def _quote(a: str) -> str:
    return a if a and all(c.isalnum() or c in "-_.:/,=+" for c in a) else "'" + a.replace("'", "'\\''") + "'"


def json_records(run: GridRun) -> str:
    return json_text(cell_records(run), indent=1)


def write_json(path, run: GridRun) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json_records(run) + "\n", encoding="utf-8")
    return path


CSV_SCORES = ("confident_share", "on_label_share", "nearest_train_distance", "model_calls", "network_rows", "seconds",
              "finished_after_s")


def csv_text(run: GridRun) -> str:
    axes = [a.name for a in run.plan.axes]
    head = ["index", "page", "row", "col", *[f"axis_{a}" for a in axes], "status", "reason", *RAN_KEYS, *CSV_SCORES,
            "notes"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for rec in cell_records(run):
        s, sc = rec["settings"], rec["scores"]
        w.writerow([rec["index"], rec["page"], rec["row"], rec["col"],
                    *[_cell_text(rec["axes"].get(a)) for a in axes], rec["status"], rec["reason"] or "",
                    *[_cell_text(s.get(k)) for k in RAN_KEYS], *[_cell_text(sc.get(k)) for k in CSV_SCORES],
                    "; ".join(rec["notes"])])
    return buf.getvalue()


def _cell_text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return ",".join(map(str, v))
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    return str(v)


def write_csv(path, run: GridRun) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(csv_text(run), encoding="utf-8")
    return path


def images_array(run: GridRun) -> tuple[np.ndarray, np.ndarray]:
    """(images cells×N×C×H×W float32 in [−1, 1], valid cells×bool); a cell without images is NaN."""
    shapes = {r.images.shape for r in run.results if r is not None and r.images is not None}
    if not shapes:
        raise ValueError("no cell has images yet")
    if len(shapes) > 1:
        raise ValueError(f"the cells' images differ in shape ({', '.join(map(str, sorted(shapes)))}): no single array")
    shape = shapes.pop()
    out = np.full((len(run.results), *shape), np.nan, np.float32)
    valid = np.zeros(len(run.results), bool)
    for i, r in enumerate(run.results):
        if r is not None and r.images is not None:
            out[i], valid[i] = r.images, True
    return out, valid


def write_npz(path, run: GridRun) -> Path:
    images, valid = images_array(run)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, images=images, valid=valid)
    return path


# ----- the labelled picture ------------------------------------------------------------------------------------
def score_line(res) -> str:
    """The short score text under a cell."""
    if res is None:
        return NOT_RUN
    if res.status != "done":
        return "invalid"
    sc, parts = res.scores, []
    if "confident_share" in sc:
        parts.append(f"conf {sc['confident_share']:.0%}")
    if "on_label_share" in sc:
        parts.append(f"label {sc['on_label_share']:.0%}")
    if "nearest_train_distance" in sc:
        parts.append(f"d1 {sc['nearest_train_distance']:.2f}")
    parts.append(f"{sc.get('seconds', 0):.2f}s")
    return " · ".join(parts)


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def cell_picture(res, shape_hint=None, scale: int = 1) -> np.ndarray:
    """A cell's images as ``ddpm sample``'s grid (pad 1), or a grey tile for a cell without images."""
    if res is not None and res.images is not None:
        return batch_grid(res.images, scale)
    h, w = shape_hint or (32, 32)
    return np.full((h, w, 3), 200 if res is None else 235, np.uint8)


def grid_picture(run: GridRun, scale: int = 2, page: int | None = None) -> np.ndarray:
    """The grid as one labelled picture (uint8 H×W×3): column values on top, row values on the left, each cell's
    score line under it, invalid cells crossed with their reason; pages one under the other (or just ``page``)."""
    from PIL import Image, ImageDraw
    plan = run.plan
    P, R, C = plan.shape
    pics = {i: cell_picture(r, None, scale) for i, r in enumerate(run.results) if r is not None and r.images is not None}
    hint = next(iter(pics.values())).shape[:2] if pics else (28 * scale, 28 * scale)
    font, small = _font(12), _font(10)
    texts = [score_line(r) for r in run.results] + list(plan.cols.labels if plan.cols else ())
    cw, ch = max(hint[1], 60, *(int(small.getlength(t)) + 6 for t in texts)), hint[0]
    row_w = 8 + max([int(font.getlength(t)) for t in (plan.rows.labels if plan.rows else ())] + [0])
    head_h, line_h, gap = 18, 14, 6
    page_h = 20 + head_h + R * (ch + line_h + gap)
    pages = range(P) if page is None else [page]
    width = max(row_w + C * (cw + gap) + gap, 240)
    title_lines = _lines(plan.title(), width - 8, small)
    head = 8 + 12 * len(title_lines)
    im = Image.new("RGB", (width, head + page_h * len(pages)), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for i, line in enumerate(title_lines):
        draw.text((4, 4 + 12 * i), line, fill=(60, 60, 60), font=small)
    for k, p in enumerate(pages):
        top = head + k * page_h
        if plan.pages is not None:
            draw.text((4, top), f"{plan.pages.name}: {plan.pages.labels[p]}", fill=(0, 0, 0), font=font)
        top += 20
        for c in range(C):
            if plan.cols is not None:
                draw.text((row_w + c * (cw + gap) + 2, top), plan.cols.labels[c], fill=(0, 0, 0), font=font)
        for r in range(R):
            y = top + head_h + r * (ch + line_h + gap)
            if plan.rows is not None:
                draw.text((2, y + ch // 2 - 6), plan.rows.labels[r], fill=(0, 0, 0), font=font)
            for c in range(C):
                cell = plan.cell(p, r, c)
                res = run.results[cell.index]
                x = row_w + c * (cw + gap)
                pic = pics.get(cell.index, cell_picture(res, (ch, cw)))
                im.paste(Image.fromarray(pic), (x, y))
                if res is not None and res.status != "done":
                    draw.line((x, y, x + cw - 1, y + ch - 1), fill=(200, 40, 40), width=2)
                    draw.line((x, y + ch - 1, x + cw - 1, y), fill=(200, 40, 40), width=2)
                    _wrap(draw, res.reason or "", (x + 3, y + 3), cw - 6, small)
                draw.text((x, y + ch + 1), score_line(res), fill=(40, 40, 40) if res is None or res.status == "done"
                          else (180, 30, 30), font=small)
    return np.asarray(im, dtype=np.uint8).copy()


def _lines(text: str, width: int, font) -> list[str]:
    out, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if font.getlength(trial) > width and line:
            out.append(line)
            line = word
        else:
            line = trial
    return out + ([line] if line else [])


def _wrap(draw, text: str, at, width: int, font) -> None:
    for i, line in enumerate(_lines(text, width, font)):
        draw.text((at[0], at[1] + 11 * i), line, fill=(150, 20, 20), font=font)


def write_png(path, run: GridRun, scale: int = 2) -> Path:
    return save_image(path, grid_picture(run, scale))


__all__ = ["cell_records", "json_records", "write_json", "csv_text", "write_csv", "images_array", "write_npz",
           "grid_picture", "write_png", "score_line", "SCORES"]
