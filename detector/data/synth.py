"""Embedded synthetic detection benchmark: a seeded, COCO-format set of textured shapes on clutter.

Built so that the label-assignment rule matters: object sizes span every FPN level (sqrt-area
log-uniform from `min_object_size` to `max_object_frac` of the side), a share of objects is slender
(rods, aspect 1:3..1:8), a share is acentric (rings, L-shapes, crescents: the box centre (almost)
never holds an object pixel), and crowded images hold a cluster of overlapping, partly occluded
objects. A rotated shape's box can be larger than its drawn extent (up to ~0.85 of the side).

Every constant below and in `synth_draw` (categories, objects, background) changes the output: bump
GENERATOR_VERSION when one does (it is in the dir name).

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
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from detector.config import ConfigError, SynthConfig
from detector.config.ranges import check_synth
from detector.data.staging import check_destination, staged_folder
from detector.data.synth_draw import CATEGORIES, CATEGORY_SPECS, _background, _loguniform, _render_object

GENERATOR_VERSION = 1

SPLITS = ("train", "val")

AREA_BUDGET = 8.0  # per-image size cap: sqrt-area <= side * sqrt(AREA_BUDGET / n_objects)
CLUSTER_SIZE = (4, 12)  # objects in a crowded cluster (inclusive)
CLUSTER_MAX_FRAC = 0.2  # cluster object scale log-uniform in [2*min_object_size, this * side]
CLUSTER_SPREAD = 0.35  # std of cluster offsets = this * scale * sqrt(k)
CLUSTER_SIZE_STD = 0.2  # log-std of a cluster object's size around the cluster scale
Z_JITTER = 0.7  # std of the noise on -log(size) that sets the drawing order (largest ~first)
PLACE_TRIES = 10
NOISE_STD = (1.0, 2.0)  # sensor noise std = a + b * clutter (it roughly doubles the PNG size)


def _check(cfg: SynthConfig) -> None:
    """The config's ranges and rules (`detector.config.ranges.check_synth`) as a one-line ConfigError."""
    try:
        check_synth(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def dataset_dir_name(cfg: SynthConfig) -> str:
    """'shapes-<12 hex>' from every SynthConfig field and GENERATOR_VERSION."""
    blob = json.dumps({"cfg": dataclasses.asdict(cfg), "version": GENERATOR_VERSION}, sort_keys=True)
    return "shapes-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def _rng(cfg: SynthConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, SPLITS.index(split), index]))


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
        # a cluster wider than half the image is centred (only small images; elsewhere this is the old draw)
        low, high = (scale, side - scale) if side >= 2 * scale else (side / 2, side / 2)
        centre = rng.uniform(low, high, 2)
        cluster = (float(centre[0]), float(centre[1]), CLUSTER_SPREAD * scale * np.sqrt(k))
        for _ in range(k):
            cat = _sample_category(rng, cfg)
            objs.append((cat, max(lo, scale * float(np.exp(rng.normal(0, CLUSTER_SIZE_STD)))), cluster))
    order = np.argsort([-np.log(s) + rng.normal(0, Z_JITTER) for _, s, _ in objs], kind="stable")
    return [objs[i] for i in order]


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


def written_by_synth(folder: Path) -> bool:
    """Whether `folder` holds a dataset this generator published (its meta.json names the generator)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "generator_version" in meta and str(meta.get("name", "")).startswith("shapes-")


def generate(out_dir: str | Path, cfg: SynthConfig, workers: int = 2,
             progress: Callable[[int, int], None] | None = None, force: bool = False) -> Path:
    """Write the dataset of `cfg` to `out_dir`: images/<split>/NNNNNN.png, instances_<split>.json, meta.json.

    Built in a locked temporary folder beside `out_dir` and renamed into place at the end, replacing a
    dataset written here before; a non-empty `out_dir` that is not such a dataset is refused unless
    `force` (a one-line DataError before any work), the current folder always. Temporary folders of
    killed generations are removed first (`detector.data.staging`). `progress(done, total)` is called
    in this process as images finish.
    """
    _check(cfg)
    out = check_destination(out_dir, force, written_by_synth)
    with staged_folder(out, force, written_by_synth) as tmp:
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
    return out


def ensure_dataset(root: str | Path, cfg: SynthConfig, workers: int = 2,
                   progress: Callable[[int, int], None] | None = None) -> Path:
    """root/dataset_dir_name(cfg), generated first if its meta.json is missing (replacing whatever is
    there: the folder name is this generator's)."""
    path = Path(root) / dataset_dir_name(cfg)
    if not (path / "meta.json").is_file():
        generate(path, cfg, workers=workers, progress=progress, force=True)
    return path


__all__ = ["GENERATOR_VERSION", "CATEGORIES", "CATEGORY_SPECS", "dataset_dir_name", "generate", "ensure_dataset",
           "render_image", "written_by_synth"]
