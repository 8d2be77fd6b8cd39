"""Embedded synthetic detection benchmark: a seeded, COCO-format set of textured shapes on clutter.

Built so that the label-assignment rule matters: object sizes span every FPN level (sqrt-area
log-uniform from `min_object_size` to `max_object_frac` of the side), a share of objects is slender
(rods, aspect 1:3..1:8), a share is acentric (rings, L-shapes, crescents: the box centre (almost)
never holds an object pixel), and crowded images hold a cluster of overlapping, partly occluded
objects. A rotated shape's box can be larger than its drawn extent (up to ~0.85 of the side).

Every constant below changes the output: bump GENERATOR_VERSION when one does (it is in the dir name).

One image is a pure function of (cfg, split, index): its RNG is `SeedSequence([seed, split, index])`,
so the output does not depend on the number of worker processes. Steps of `render_image`:
  1. background: smooth colour field, unannotated distractors (random-walk scribbles, lumpy flat
     blobs, soft-edged blocky-noise stains) and cloud noise, all scaled by `clutter`. None has a
     regular texture or a geometric outline, so none is an unannotated instance of a category.
  2. layout: object count log-uniform in 1..max_objects (plus a cluster with prob. `crowding`); the
     size cap shrinks with the count so crowded images hold smaller objects (`AREA_BUDGET`).
  3. objects, roughly largest first: each category is a fixed (shape, texture) pair drawn in two
     random colours, so colour carries no class information. A placement is rejected (and retried)
     if it would leave an earlier object with less than `min_visible` of its pixels visible.
  4. annotations from the final owner map: bbox = tight box of the VISIBLE pixels, area = their count.
  5. sensor noise.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from detector.config import SynthConfig

GENERATOR_VERSION = 1

# name: (family, texture). Family decides which knob draws it: slender_share -> rod,
# acentric_share -> ring/ell/crescent, the rest -> compact shapes. Ids are 1..len in this order.
CATEGORY_SPECS: dict[str, tuple[str, str]] = {
    "square": ("compact", "checkerboard"),
    "disc": ("compact", "polka dots"),
    "triangle": ("compact", "parallel stripes"),
    "star": ("compact", "concentric rings"),
    "rod": ("slender", "chevrons"),
    "ring": ("acentric", "radial spokes"),
    "ell": ("acentric", "grid lines"),
    "crescent": ("acentric", "smooth gradient"),
}
CATEGORIES: list[str] = list(CATEGORY_SPECS)
SPLITS = ("train", "val")

COMPACT_ASPECT = 1.5  # compact/acentric shapes: frame aspect log-uniform in [1/1.5, 1.5]
SLENDER_ASPECT = (3.0, 8.0)  # rods: long/short side log-uniform in this range, axis-aligned
ELL_TILT = np.pi / 12  # L-shapes: max rotation away from the 4 axis-aligned orientations
ROD_MIN_THICKNESS = 3.0  # px, so that a rod stays distinguishable from a scribble
AREA_BUDGET = 8.0  # per-image size cap: sqrt-area <= side * sqrt(AREA_BUDGET / n_objects)
CLUSTER_SIZE = (4, 12)  # objects in a crowded cluster (inclusive)
CLUSTER_MAX_FRAC = 0.2  # cluster object scale log-uniform in [2*min_object_size, this * side]
CLUSTER_SPREAD = 0.35  # std of cluster offsets = this * scale * sqrt(k)
CLUSTER_SIZE_STD = 0.2  # log-std of a cluster object's size around the cluster scale
Z_JITTER = 0.7  # std of the noise on -log(size) that sets the drawing order (largest ~first)
PLACE_TRIES = 10
TEXTURE_PERIOD = (0.14, 0.28, 2.0, 14.0)  # period = clip(size * U(a, b), lo, hi) px
MIN_CONTRAST = 60.0  # luminance difference between an object's two colours
DISTRACTORS = 24.0  # expected distractors per 320x320 image at clutter=1
CLOUD_AMPLITUDE = 30.0  # std of the low-frequency background modulation at clutter=1
CLOUD_CELL = 32  # px between the random nodes of that modulation
NOISE_STD = (1.0, 2.0)  # sensor noise std = a + b * clutter (it roughly doubles the PNG size)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _check(cfg: SynthConfig) -> None:
    if min(cfg.train, cfg.val, cfg.seed) < 0 or cfg.size < 32 or cfg.max_objects < 1:
        raise ValueError("synth: need train, val, seed >= 0, size >= 32, max_objects >= 1")
    if not (0 <= cfg.slender_share and 0 <= cfg.acentric_share and cfg.slender_share + cfg.acentric_share <= 1):
        raise ValueError("synth: slender_share and acentric_share must be >= 0 and sum to <= 1")
    if not (0 <= cfg.crowding <= 1 and 0 <= cfg.clutter <= 1 and 0 < cfg.min_visible <= 1):
        raise ValueError("synth: crowding and clutter must lie in [0, 1], min_visible in (0, 1]")
    if not 0 < cfg.min_object_size < cfg.max_object_frac * cfg.size:
        raise ValueError("synth: need 0 < min_object_size < max_object_frac * size")


def dataset_dir_name(cfg: SynthConfig) -> str:
    """'shapes-<12 hex>' from every SynthConfig field and GENERATOR_VERSION."""
    blob = json.dumps({"cfg": dataclasses.asdict(cfg), "version": GENERATOR_VERSION}, sort_keys=True)
    return "shapes-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def _rng(cfg: SynthConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, SPLITS.index(split), index]))


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


# ---------------------------------------------------------------------------------------------- objects
def _shape_mask(cat: str, u: np.ndarray, v: np.ndarray, xr: np.ndarray, yr: np.ndarray, hw: float, hh: float,
                rng: np.random.Generator) -> np.ndarray:
    """Inside test in the object frame: u, v in [-1, 1] over the frame box; xr, yr in px."""
    r2 = u * u + v * v
    if cat == "square":
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if cat == "disc":
        return r2 <= 1
    if cat == "triangle":  # apex (0, -1), base corners (+-1, 1)
        return (v <= 1) & (v >= 2 * np.abs(u) - 1)
    if cat == "star":  # 5 points, outer radius 1; fold into one half-sector, test against its edge
        ri = rng.uniform(0.4, 0.55)
        sector = 2 * np.pi / 5
        th = np.mod(np.arctan2(v, u), sector)
        th = np.minimum(th, sector - th)
        r = np.sqrt(r2)
        px, py = r * np.cos(th), r * np.sin(th)
        qx, qy = ri * np.cos(sector / 2), ri * np.sin(sector / 2)
        return (qx - 1) * py - qy * (px - 1) >= 0
    if cat == "rod":  # capsule along xr
        dx = np.maximum(np.abs(xr) - (hw - hh), 0)
        return dx * dx + yr * yr <= hh * hh
    if cat == "ring":
        return (r2 <= 1) & (r2 >= rng.uniform(0.45, 0.7) ** 2)
    if cat == "ell":  # arms 25-45% of the side thick: the box centre is never on the L
        t = 2 * rng.uniform(0.25, 0.45)
        return (np.abs(u) <= 1) & (np.abs(v) <= 1) & ((u <= -1 + t) | (v >= 1 - t))
    if cat == "crescent":
        d, rb = rng.uniform(0.35, 0.6), rng.uniform(0.75, 0.95)
        return (r2 <= 1) & ((u - d) ** 2 + v * v > rb * rb)
    raise KeyError(cat)


def _texture(cat: str, u: np.ndarray, v: np.ndarray, xr: np.ndarray, yr: np.ndarray, period: float,
             rng: np.random.Generator) -> np.ndarray:
    """Mixing weight in [0, 1] between the object's two colours; the pattern family is the category's."""
    px, py = rng.uniform(0, period, 2)
    if cat == "square":
        return (np.floor((xr + px) / period) + np.floor((yr + py) / period)) % 2
    if cat == "disc":
        fx, fy = (xr + px) / period % 1 - 0.5, (yr + py) / period % 1 - 0.5
        return (fx * fx + fy * fy < 0.09).astype(np.float32)
    if cat == "triangle":
        a = rng.uniform(0, np.pi)
        return ((xr * np.cos(a) + yr * np.sin(a) + px) / period % 1 < 0.5).astype(np.float32)
    if cat == "star":
        return ((np.sqrt(xr * xr + yr * yr) + px) / period % 1 < 0.5).astype(np.float32)
    if cat == "rod":
        return ((xr + np.abs(yr) + px) / period % 1 < 0.5).astype(np.float32)
    if cat == "ring":
        spokes = int(rng.integers(6, 13))
        return ((np.arctan2(v, u) / (2 * np.pi) * spokes + px / period) % 1 < 0.5).astype(np.float32)
    if cat == "ell":
        return (((xr + px) / period % 1 < 0.3) | ((yr + py) / period % 1 < 0.3)).astype(np.float32)
    if cat == "crescent":
        a = rng.uniform(0, 2 * np.pi)
        return np.clip((u * np.cos(a) + v * np.sin(a) + 1) / 2, 0, 1)
    raise KeyError(cat)


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random RGB colours with at least MIN_CONTRAST luminance difference (when 8 draws allow)."""
    a = rng.uniform(0, 255, 3).astype(np.float32)
    for _ in range(8):
        b = rng.uniform(0, 255, 3).astype(np.float32)
        if abs(float((a - b) @ _LUMA)) >= MIN_CONTRAST:
            break
    return a, b


def _render_object(rng: np.random.Generator, cat: str, size: float, max_extent: float) -> tuple[np.ndarray, np.ndarray]:
    """One object in its own patch, cropped to its pixels.

    Returns mask (h, w) bool and rgb (h, w, 3) float32 (meaningful where mask).
    """
    if CATEGORY_SPECS[cat][0] == "slender":
        aspect = _loguniform(rng, *SLENDER_ASPECT)
        size = max(size, ROD_MIN_THICKNESS * np.sqrt(aspect))
        theta = 0.0 if rng.random() < 0.5 else np.pi / 2  # axis-aligned: the box stays slender
    elif cat == "ell":  # one of 4 orientations, slightly tilted: the box centre stays off the L
        aspect = _loguniform(rng, 1 / COMPACT_ASPECT, COMPACT_ASPECT)
        theta = int(rng.integers(4)) * np.pi / 2 + rng.uniform(-ELL_TILT, ELL_TILT)
    else:
        aspect = _loguniform(rng, 1 / COMPACT_ASPECT, COMPACT_ASPECT)
        theta = rng.uniform(0, 2 * np.pi)
    hw, hh = size * np.sqrt(aspect) / 2, size / np.sqrt(aspect) / 2
    c, s = abs(np.cos(theta)), abs(np.sin(theta))
    shrink = min(1.0, max_extent / (2 * max(hw * c + hh * s, hw * s + hh * c)))
    hw, hh = hw * shrink, hh * shrink
    w = int(np.ceil(2 * (hw * c + hh * s))) + 2
    h = int(np.ceil(2 * (hw * s + hh * c))) + 2
    cx, cy = w / 2 + rng.uniform(-0.5, 0.5), h / 2 + rng.uniform(-0.5, 0.5)
    x = (np.arange(w, dtype=np.float32) + 0.5 - cx)[None, :]
    y = (np.arange(h, dtype=np.float32) + 0.5 - cy)[:, None]
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    xr, yr = x * cos + y * sin, -x * sin + y * cos
    u, v = xr / np.float32(hw), yr / np.float32(hh)
    mask = _shape_mask(cat, u, v, xr, yr, hw, hh, rng)
    if not mask.any():
        mask[h // 2, w // 2] = True
    lo, hi, pmin, pmax = TEXTURE_PERIOD
    t = _texture(cat, u, v, xr, yr, float(np.clip(size * rng.uniform(lo, hi), pmin, pmax)), rng)
    a, b = _two_colours(rng)
    g, psi = rng.uniform(0, 0.2), rng.uniform(0, 2 * np.pi)
    shade = 1 + g * (u * np.cos(psi) + v * np.sin(psi))
    rgb = (a + t[..., None] * (b - a)) * shade[..., None]
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return mask[crop], rgb[crop]


def _sample_category(rng: np.random.Generator, cfg: SynthConfig) -> str:
    p = rng.random()
    if p < cfg.slender_share:
        family = "slender"
    elif p < cfg.slender_share + cfg.acentric_share:
        family = "acentric"
    else:
        family = "compact"
    names = [n for n, (f, _) in CATEGORY_SPECS.items() if f == family]
    return names[int(rng.integers(len(names)))]


def _layout(rng: np.random.Generator, cfg: SynthConfig) -> list[tuple[str, float, tuple[float, float, float] | None]]:
    """Objects to try, in drawing order: (category, sqrt-area size, cluster (cx, cy, std) or None)."""
    side = cfg.size
    n_free = min(int(np.exp(rng.uniform(0, np.log(cfg.max_objects + 1)))), cfg.max_objects)
    k = 0
    if rng.random() < cfg.crowding:
        k = min(int(rng.integers(CLUSTER_SIZE[0], CLUSTER_SIZE[1] + 1)), cfg.max_objects)
        n_free = min(n_free, cfg.max_objects - k)
    lo = cfg.min_object_size
    hi = max(min(cfg.max_object_frac * side, side * np.sqrt(AREA_BUDGET / max(n_free + k, 1))), 1.5 * lo)
    objs = [(_sample_category(rng, cfg), _loguniform(rng, lo, hi), None) for _ in range(n_free)]
    if k:
        scale = _loguniform(rng, 2 * lo, max(CLUSTER_MAX_FRAC * side, 3 * lo))
        centre = rng.uniform(scale, side - scale, 2)
        cluster = (float(centre[0]), float(centre[1]), CLUSTER_SPREAD * scale * np.sqrt(k))
        for _ in range(k):
            cat = _sample_category(rng, cfg)
            objs.append((cat, max(lo, scale * float(np.exp(rng.normal(0, CLUSTER_SIZE_STD)))), cluster))
    order = np.argsort([-np.log(s) + rng.normal(0, Z_JITTER) for _, s, _ in objs], kind="stable")
    return [objs[i] for i in order]


# ------------------------------------------------------------------------------------------- background
def _background(rng: np.random.Generator, side: int, clutter: float) -> np.ndarray:
    """(side, side, 3) float32: colour field + distractors + cloud noise."""
    g = int(rng.integers(2, 6))
    img = Image.fromarray(rng.integers(40, 216, (g, g, 3), dtype=np.uint8)).resize((side, side), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    n = int(rng.poisson(DISTRACTORS * clutter * (side / 320) ** 2))
    stains = []
    for kind in rng.integers(0, 3, n):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(0, side, 2)
        if kind == 0:  # scribble: random walk with strong turning
            steps = int(rng.integers(6, 20))
            heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.9, steps))
            step = rng.uniform(0.01, 0.04) * side
            pts = np.stack([x0 + np.cumsum(step * np.cos(heading)), y0 + np.cumsum(step * np.sin(heading))], 1)
            draw.line([(x0, y0)] + [tuple(p) for p in pts.tolist()], fill=colour, width=int(rng.integers(1, 4)),
                      joint="curve")
        elif kind == 1:  # lumpy blob of flat colour
            ang = np.linspace(0, 2 * np.pi, 40, endpoint=False)
            amp, ph = rng.uniform(0, 0.3, 3), rng.uniform(0, 2 * np.pi, 3)  # harmonics 2..4: lumpy, never star-like
            rad = rng.uniform(0.01, 0.08) * side * (1 + sum(amp[i] * np.cos((i + 2) * ang + ph[i]) for i in range(3)))
            draw.polygon(list(zip((x0 + rad * np.cos(ang)).tolist(), (y0 + rad * np.sin(ang)).tolist())), fill=colour)
        else:
            stains.append((x0, y0))
    arr = np.asarray(img, dtype=np.float32)  # a converted, writable copy
    for x0, y0 in stains:  # soft-edged blocky noise: no outline, no regular pattern
        h, w = (rng.uniform(0.03, 0.15, 2) * side).astype(int) + 2
        b = int(rng.integers(1, 4))
        noise = rng.uniform(0, 255, (h // b + 1, w // b + 1, 3)).astype(np.float32).repeat(b, 0).repeat(b, 1)[:h, :w]
        yy, xx = np.ogrid[-1:1:h * 1j, -1:1:w * 1j]
        alpha = (rng.uniform(0.3, 0.7) * np.exp(-3 * (xx * xx + yy * yy)))[..., None].astype(np.float32)
        ys, xs = int(min(y0, side - h)), int(min(x0, side - w))
        region = arr[ys:ys + h, xs:xs + w]
        region += alpha * (noise - region)
    cells = side // CLOUD_CELL + 2
    cloud = Image.fromarray(rng.standard_normal((cells, cells), dtype=np.float32)).resize((side, side), Image.BICUBIC)
    arr += CLOUD_AMPLITUDE * clutter * np.asarray(cloud)[..., None]
    return arr


# ------------------------------------------------------------------------------------------------ image
def render_image(cfg: SynthConfig, split: str, index: int) -> tuple[np.ndarray, list[dict]]:
    """Image `index` of `split`: (side, side, 3) uint8 RGB and annotations
    [{'category_id', 'bbox' [x, y, w, h] of the visible pixels, 'area' visible pixel count,
    'visible' share of the object's pixels left visible (an extra key, ignored by COCO tools)}]."""
    rng = _rng(cfg, split, index)
    side = cfg.size
    canvas = _background(rng, side, cfg.clutter)
    owner = np.full((side, side), -1, np.int16)  # index of the object that shows at each pixel
    layout = _layout(rng, cfg)
    full = np.zeros(len(layout), np.int64)
    visible = np.zeros(len(layout), np.int64)
    placed: list[tuple[str, int, int, int, int]] = []  # category, y0, x0, h, w
    for cat, size, cluster in layout:
        mask, rgb = _render_object(rng, cat, size, side - 1)
        h, w = mask.shape
        n = len(placed)
        for _ in range(PLACE_TRIES):
            if cluster is None:
                x0, y0 = int(rng.integers(0, side - w + 1)), int(rng.integers(0, side - h + 1))
            else:
                cx, cy = rng.normal(cluster[:2], cluster[2])
                x0, y0 = int(np.clip(round(cx - w / 2), 0, side - w)), int(np.clip(round(cy - h / 2), 0, side - h))
            region = owner[y0:y0 + h, x0:x0 + w]
            hidden = region[mask]
            lost = np.bincount(hidden[hidden >= 0], minlength=n)[:n]
            if np.any(visible[:n] - lost < cfg.min_visible * full[:n]):
                continue
            visible[:n] -= lost
            full[n] = visible[n] = int(mask.sum())
            region[mask] = n
            canvas[y0:y0 + h, x0:x0 + w][mask] = rgb[mask]
            placed.append((cat, y0, x0, h, w))
            break
    anns = []
    for j, (cat, y0, x0, h, w) in enumerate(placed):
        ys, xs = np.nonzero(owner[y0:y0 + h, x0:x0 + w] == j)
        assert len(ys) == visible[j] and len(ys) >= cfg.min_visible * full[j]
        bx, by = x0 + int(xs.min()), y0 + int(ys.min())
        anns.append({"category_id": CATEGORIES.index(cat) + 1, "area": int(len(ys)),
                     "bbox": [bx, by, x0 + int(xs.max()) + 1 - bx, y0 + int(ys.max()) + 1 - by],
                     "visible": round(len(ys) / int(full[j]), 4)})
    lo, hi = NOISE_STD
    canvas += (lo + hi * cfg.clutter) * rng.standard_normal(canvas.shape, dtype=np.float32)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), anns


def _work(job: tuple[SynthConfig, str, int, str]) -> tuple[str, int, list[dict]]:
    cfg, split, index, root = job
    image, anns = render_image(cfg, split, index)
    Image.fromarray(image).save(Path(root) / "images" / split / f"{index:06d}.png", compress_level=1)
    return split, index, anns


# ----------------------------------------------------------------------------------------------- writing
def _info(cfg: SynthConfig) -> dict:
    return {"description": "anchorlab synthetic shapes benchmark (detector.data.synth)",
            "version": str(GENERATOR_VERSION), "generator_version": GENERATOR_VERSION,
            "synth": dataclasses.asdict(cfg)}


def _coco(cfg: SynthConfig, split: str, anns_per_image: list[list[dict]]) -> dict:
    images, annotations = [], []
    for index, anns in enumerate(anns_per_image):
        images.append({"id": index + 1, "file_name": f"{index:06d}.png", "width": cfg.size, "height": cfg.size})
        for a in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, **a, "iscrowd": 0})
    categories = [{"id": i + 1, "name": n, "supercategory": CATEGORY_SPECS[n][0]} for i, n in enumerate(CATEGORIES)]
    return {"info": {**_info(cfg), "split": split}, "licenses": [], "images": images,
            "annotations": annotations, "categories": categories}


def generate(out_dir: str | Path, cfg: SynthConfig, workers: int = 2,
             progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the dataset of `cfg` to `out_dir` (replacing it): images/<split>/NNNNNN.png,
    instances_<split>.json, meta.json. Built in a temp dir next to `out_dir`, renamed at the end.
    `progress(done, total)` is called in this process as images finish."""
    _check(cfg)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        counts = {"train": cfg.train, "val": cfg.val}
        results = {split: [None] * n for split, n in counts.items()}
        for split in SPLITS:
            (tmp / "images" / split).mkdir(parents=True)
        jobs = [(cfg, split, i, str(tmp)) for split in SPLITS for i in range(counts[split])]
        if workers <= 1:
            done_iter = map(_work, jobs)
            pool = None
        else:
            pool = mp.get_context("spawn").Pool(workers)
            done_iter = pool.imap_unordered(_work, jobs, chunksize=max(1, min(16, len(jobs) // (8 * workers))))
        try:
            for done, (split, index, anns) in enumerate(done_iter, 1):
                results[split][index] = anns
                if progress is not None:
                    progress(done, len(jobs))
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        for split in SPLITS:
            (tmp / f"instances_{split}.json").write_text(json.dumps(_coco(cfg, split, results[split])))
        meta = {"name": dataset_dir_name(cfg), **_info(cfg),
                "categories": [{"id": i + 1, "name": n, "family": CATEGORY_SPECS[n][0], "texture": CATEGORY_SPECS[n][1]}
                               for i, n in enumerate(CATEGORIES)],
                "splits": {s: {"images": counts[s], "objects": sum(map(len, results[s])),
                               "annotations": f"instances_{s}.json", "image_dir": f"images/{s}"} for s in SPLITS}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            out_dir.rename(old / out_dir.name)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_dataset(root: str | Path, cfg: SynthConfig, workers: int = 2,
                   progress: Callable[[int, int], None] | None = None) -> Path:
    """root/dataset_dir_name(cfg), generated first if its meta.json is missing."""
    path = Path(root) / dataset_dir_name(cfg)
    if not (path / "meta.json").is_file():
        generate(path, cfg, workers=workers, progress=progress)
    return path


__all__ = ["GENERATOR_VERSION", "CATEGORIES", "CATEGORY_SPECS", "dataset_dir_name", "generate", "ensure_dataset",
           "render_image"]
