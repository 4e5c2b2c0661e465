"""A synthetic stand-in for the paper's data, generated deterministically in seconds.

SYNTHETIC DATA: results on it demonstrate that the pipeline runs and that the networks learn;
they are not a reproduction of the paper's numbers.

- ``fine``: a fine-grained benchmark. Every image shows the same kind of object (a "bird":
  body, head, tail, in similar colours) at a random place, scale and orientation on a
  cluttered background. Classes differ only by one small localized detail: the colour and
  position of a spot on the object, the way bird species differ by a wing bar or a crown.
- ``coarse``: a source set of coarse object categories (distinct shapes in random colours on
  the same clutter), the stand-in for ImageNet in Steps 0-1.

Each image is drawn from its own RNG seeded by (seed, class, index), so the output does not
depend on the order or number of images generated.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from halsal.data.boxes import BOX_COLUMNS
from halsal.io import atomic_write, write_tsv

# Detail spots: (name, position on the object in body-radius units). Classes cycle through
# positions first, then colours, so class c has position c % 5 and colour c // 5.
SPOT_POSITIONS = (("crown", (1.15, -0.55)), ("wing", (0.0, -0.15)), ("belly", (0.1, 0.45)),
                  ("tail", (-1.25, 0.0)), ("nape", (0.7, -0.45)))
SPOT_COLOURS = (("red", (220, 30, 30)), ("blue", (30, 60, 230)), ("yellow", (240, 220, 20)),
                ("white", (250, 250, 250)), ("black", (10, 10, 10)), ("green", (30, 200, 60)))
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon",
          "crescent", "bar", "pentagon", "heart")


def class_names(task: str, classes: int) -> list[str]:
    if task == "fine":
        limit = len(SPOT_POSITIONS) * len(SPOT_COLOURS)
        if classes > limit:
            raise ValueError(f"synthetic fine task supports at most {limit} classes, got {classes}")
        return [f"{SPOT_COLOURS[c // 5][0]}_{SPOT_POSITIONS[c % 5][0]}" for c in range(classes)]
    if task == "coarse":
        if classes > len(SHAPES):
            raise ValueError(f"synthetic coarse task supports at most {len(SHAPES)} classes, got {classes}")
        return list(SHAPES[:classes])
    raise ValueError(f"synthetic task must be 'fine' or 'coarse', got {task!r}")


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """Random small shapes in muted colours: the cluttered background."""
    for _ in range(int(rng.integers(12, 20))):
        x, y = rng.uniform(-0.1, 1.0, 2) * size
        w, h = rng.uniform(0.04, 0.15, 2) * size
        colour = tuple(int(c) for c in rng.integers(40, 200, 3))
        if rng.random() < 0.5:
            draw.rectangle([x, y, x + w, y + h], fill=colour)
        else:
            draw.ellipse([x, y, x + w, y + h], fill=colour)


def _polygon(cx, cy, r, n, phase=0.0, inner=None):
    pts = []
    for i in range(n * (2 if inner else 1)):
        rad = inner if inner and i % 2 else r
        a = phase + math.pi * 2 * i / (n * (2 if inner else 1))
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _shape(draw, kind, cx, cy, r, colour, rot):
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.polygon(_polygon(cx, cy, r * 1.2, 4, rot + math.pi / 4), fill=colour)
    elif kind == "triangle":
        draw.polygon(_polygon(cx, cy, r * 1.2, 3, rot), fill=colour)
    elif kind == "star":
        draw.polygon(_polygon(cx, cy, r * 1.3, 5, rot, inner=r * 0.5), fill=colour)
    elif kind == "cross":
        for a in (rot, rot + math.pi / 2):
            dx, dy = math.cos(a), math.sin(a)
            w = r * 0.35
            draw.polygon([(cx - dx * r - dy * w, cy - dy * r + dx * w), (cx + dx * r - dy * w, cy + dy * r + dx * w),
                          (cx + dx * r + dy * w, cy + dy * r - dx * w), (cx - dx * r + dy * w, cy - dy * r - dx * w)], fill=colour)
    elif kind == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(2, int(r * 0.35)))
    elif kind == "diamond":
        draw.polygon([(cx, cy - r * 1.3), (cx + r * 0.7, cy), (cx, cy + r * 1.3), (cx - r * 0.7, cy)], fill=colour)
    elif kind == "hexagon":
        draw.polygon(_polygon(cx, cy, r * 1.1, 6, rot), fill=colour)
    elif kind == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        draw.ellipse([cx - r * 0.4, cy - r * 1.1, cx + r * 1.4, cy + r * 0.7], fill=(0, 0, 0, 0))
    elif kind == "bar":
        draw.polygon(_polygon(cx, cy, r * 1.3, 4, rot, inner=None)[:2] + _polygon(cx, cy, r * 0.4, 4, rot)[2:], fill=colour)
    elif kind == "pentagon":
        draw.polygon(_polygon(cx, cy, r * 1.15, 5, rot), fill=colour)
    elif kind == "heart":
        draw.ellipse([cx - r, cy - r * 0.8, cx, cy + r * 0.2], fill=colour)
        draw.ellipse([cx, cy - r * 0.8, cx + r, cy + r * 0.2], fill=colour)
        draw.polygon([(cx - r, cy - r * 0.2), (cx + r, cy - r * 0.2), (cx, cy + r)], fill=colour)


def _bird(draw, rng, size, spot_pos, spot_colour):
    """The fine-grained object: body, head, tail in earthy colours, plus the class's spot."""
    r = rng.uniform(0.2, 0.26) * size  # body half-length
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    flip = -1.0 if rng.random() < 0.5 else 1.0
    body = tuple(int(c) for c in np.clip(np.array([150, 110, 70]) + rng.integers(-25, 25, 3), 0, 255))
    head = tuple(int(c) for c in np.clip(np.array(body) + 25, 0, 255))
    draw.ellipse([cx - r, cy - r * 0.6, cx + r, cy + r * 0.6], fill=body)
    hx = cx + flip * r * 0.95
    draw.ellipse([hx - r * 0.42, cy - r * 0.95, hx + r * 0.42, cy - r * 0.11], fill=head)
    beak = hx + flip * r * 0.42
    draw.polygon([(beak, cy - r * 0.6), (beak + flip * r * 0.3, cy - r * 0.5), (beak, cy - r * 0.4)], fill=(230, 160, 40))
    tx = cx - flip * r * 0.9
    draw.polygon([(tx, cy - r * 0.2), (tx - flip * r * 0.6, cy - r * 0.5), (tx - flip * r * 0.6, cy + r * 0.3)], fill=body)
    sx, sy = cx + flip * spot_pos[0] * r, cy + spot_pos[1] * r
    sr = r * 0.28
    draw.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=spot_colour)


def render(task: str, label: int, index: int, seed: int, size: int) -> Image.Image:
    """One image of class ``label`` (deterministic in its arguments)."""
    return render_with_box(task, label, index, seed, size)[0]


def render_with_box(task: str, label: int, index: int, seed: int, size: int) -> tuple[Image.Image, tuple]:
    """One image of class ``label`` and its object's box ``(x, y, w, h)`` in pixels: the bird
    (``fine``) or the shape (``coarse``), measured on the object drawn alone."""
    rng = np.random.default_rng([seed, label, index])
    img = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(60, 180, 3)))
    draw = ImageDraw.Draw(img)
    _clutter(draw, rng, size)
    # The object is drawn twice from the same RNG state: on the image, and alone on black.
    alone = Image.new("RGB", (size, size))
    for target, gen in ((ImageDraw.Draw(alone), copy.deepcopy(rng)), (draw, rng)):
        if task == "fine":
            _bird(target, gen, size, SPOT_POSITIONS[label % 5][1], SPOT_COLOURS[label // 5][1])
        else:
            colour = tuple(int(c) for c in gen.integers(0, 256, 3))
            r = gen.uniform(0.2, 0.3) * size
            cx, cy = gen.uniform(0.3, 0.7, 2) * size
            _shape(target, SHAPES[label], cx, cy, r, colour, gen.uniform(0, math.pi))
    x0, y0, x1, y1 = alone.getbbox() or (0, 0, size, size)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), (x0, y0, x1 - x0, y1 - y0)


def generate(root: str | Path, *, task: str, classes: int, images_per_class: int, image_size: int = 160,
             seed: int = 0) -> pd.DataFrame:
    """Write ``root/images/<class>/<file>.jpg``, ``root/images.tsv`` (each image's object box, the
    CUB layout) and return the index with the boxes (see docs/design.md)."""
    root = Path(root)
    names = class_names(task, classes)
    rows = []
    for label, name in enumerate(names):
        class_dir = root / "images" / f"{label:03d}_{name}"
        class_dir.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            path = class_dir / f"{name}_{i:04d}.jpg"
            img, box = render_with_box(task, label, i, seed, image_size)
            with atomic_write(path) as tmp:
                img.save(tmp, format="JPEG", quality=92)
            rows.append({"path": str(path.resolve()), "label": label, "class_name": name, "official_split": "",
                         **dict(zip(BOX_COLUMNS, box))})
    index = pd.DataFrame(rows)
    write_tsv(root / "classes.tsv", pd.DataFrame({"label": range(len(names)), "class_name": names}))
    write_tsv(root / "images.tsv", index.assign(path=[str(Path(p).relative_to(root.resolve())) for p in index["path"]])
              [["path", "label", *BOX_COLUMNS]])
    return index
