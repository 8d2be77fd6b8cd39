"""Sparse GT-anchor IoU: only the (image, GT, anchor) pairs that overlap, found by windows on the anchor grids.

A dense (B, M, A) IoU matrix of an 800 px image holds ~13k anchors per GT, of which a GT overlaps a
few hundred; assigners that only need overlapping pairs (PAA) read them from here instead.

Dimensions: B images, M padded GTs, A anchors (level-major; on a level, row-major locations, then the
`anchors_per_location` shapes of a location, as `detector.model.anchors`), L levels, T pairs.

For every level the anchor centres form a grid (xs per column, ys per row); an anchor of half-width
`hw` can overlap a GT only if its centre lies strictly inside (gx1 - hw, gx2 + hw), so the candidates
of a GT on a level are a window of rows x columns, widened by one cell on each side to absorb float
rounding. A level whose anchors are not a grid (hand-made anchors in tests) falls back to all its
anchors. IoU values are computed with the same float operations as `detector.boxes.batched_box_iou`,
so they are bit-identical to the dense matrix; only pairs with IoU > 0 are returned, and every pair
with IoU > 0 is.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detector.boxes import box_area


@dataclass
class Pairs:
    image: Tensor  # (T,) long
    gt: Tensor  # (T,) long, index into the padded M (always a valid GT)
    anchor: Tensor  # (T,) long, index into A
    iou: Tensor  # (T,) float32, > 0


@dataclass
class LevelGrid:
    start: int  # index of the level's first anchor in A
    rows: int  # grid height; 0 for a level that is not a grid (use all its anchors)
    cols: int
    per_location: int
    xs: Tensor  # (cols,) centre x of each column
    ys: Tensor  # (rows,) centre y of each row
    half_w: float  # largest anchor half-width / half-height on the level
    half_h: float
    count: int  # anchors on the level


def level_grids(anchors: Tensor, num_per_level: list[int], per_location: int) -> list[LevelGrid]:
    """Recover each level's grid (rows, columns, centre coordinates) from the anchors themselves."""
    grids, start = [], 0
    for n in num_per_level:
        lvl = anchors[start:start + n]
        grid = LevelGrid(start, 0, 0, 1, lvl.new_zeros(0), lvl.new_zeros(0), 0.0, 0.0, n)  # fallback: every anchor
        if n and n % per_location == 0:
            centres = ((lvl[::per_location, :2] + lvl[::per_location, 2:]) / 2)  # (locations, 2)
            cols = int((centres[:, 1] == centres[0, 1]).sum())
            rows = centres.shape[0] // cols
            if rows * cols == centres.shape[0]:
                c = centres.view(rows, cols, 2)
                xs, ys = c[0, :, 0], c[:, 0, 1]
                is_grid = bool((c[..., 0] == xs).all() & (c[..., 1] == ys[:, None]).all()
                               & (xs.diff() > 0).all() & (ys.diff() > 0).all())
                if is_grid:
                    wh = (lvl[:, 2:] - lvl[:, :2]).amax(0) / 2
                    grid = LevelGrid(start, rows, cols, per_location, xs.contiguous(), ys.contiguous(),
                                     float(wh[0]), float(wh[1]), n)
        grids.append(grid)
        start += n
    return grids


def _windows(grid: LevelGrid, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(G, 4) GT boxes -> first row, row count, first column, column count (each (G,) long) on one level."""
    if grid.rows == 0:  # not a grid: one "row" holding every anchor of the level
        g = boxes.shape[0]
        zero = torch.zeros(g, dtype=torch.long, device=boxes.device)
        return zero, zero + 1, zero, zero + grid.count
    c0 = torch.searchsorted(grid.xs, boxes[:, 0] - grid.half_w) - 1
    c1 = torch.searchsorted(grid.xs, boxes[:, 2] + grid.half_w, right=True) + 1
    r0 = torch.searchsorted(grid.ys, boxes[:, 1] - grid.half_h) - 1
    r1 = torch.searchsorted(grid.ys, boxes[:, 3] + grid.half_h, right=True) + 1
    c0, c1 = c0.clamp(0, grid.cols), c1.clamp(0, grid.cols)
    r0, r1 = r0.clamp(0, grid.rows), r1.clamp(0, grid.rows)
    return r0, (r1 - r0).clamp(min=0), c0, (c1 - c0).clamp(min=0)


def overlapping_pairs(gt_boxes: Tensor, gt_valid: Tensor, anchors: Tensor, num_per_level: list[int],
                      per_location: int = 1) -> Pairs:
    """Every (image, valid GT, anchor) with IoU > 0, and that IoU.

    Args:
        gt_boxes: (B, M, 4) xyxy; gt_valid: (B, M) bool; anchors: (A, 4) xyxy in the layout above;
        num_per_level: anchors per level (sums to A); per_location: anchors per grid location.
    Returns:
        `Pairs` of T entries, ordered by level, then GT (image-major), then window position.
    """
    image, gt = gt_valid.nonzero(as_tuple=True)
    boxes = gt_boxes[image, gt]  # (G, 4)
    owners, anchor_ids = [], []
    # index_select rather than tensor[index]: CPU advanced indexing is several times slower at this size
    for grid in level_grids(anchors, num_per_level, per_location):
        r0, nr, c0, nc = _windows(grid, boxes)
        per_loc = grid.per_location
        size = nr * nc * per_loc  # (G,)
        total = int(size.sum())
        if total == 0:
            continue
        owner = torch.repeat_interleave(torch.arange(len(size), device=boxes.device), size, output_size=total)
        local = torch.arange(total, device=boxes.device).sub_((size.cumsum(0) - size).index_select(0, owner))
        if grid.rows:  # window row i starts at anchor (r0 + i) * cols + c0 (times per_loc)
            row_start = ((r0 * grid.cols + c0) * per_loc).index_select(0, owner)
            row_len = (nc * per_loc).index_select(0, owner)
            row = local.div(row_len, rounding_mode="floor")
            local.sub_(row * row_len).add_(row.mul_(grid.cols * per_loc)).add_(row_start)
        owners.append(owner)
        anchor_ids.append(local.add_(grid.start))
    if not owners:
        empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
        return Pairs(empty, empty, empty, boxes.new_zeros(0))
    owner, anchor = torch.cat(owners), torch.cat(anchor_ids)
    iou = _pair_iou(boxes, owner, anchors, anchor)
    keep = (iou > 0).nonzero().squeeze(1)
    owner = owner.index_select(0, keep)
    return Pairs(image.index_select(0, owner), gt.index_select(0, owner), anchor.index_select(0, keep),
                 iou.index_select(0, keep))


def _pair_iou(boxes: Tensor, owner: Tensor, anchors: Tensor, anchor: Tensor) -> Tensor:
    """IoU of boxes[owner] with anchors[anchor], (T,), with batched_box_iou's exact float operations."""
    g, a = boxes.index_select(0, owner), anchors.index_select(0, anchor)  # (T, 4) each
    inter = torch.minimum(g[:, 2], a[:, 2]).sub_(torch.maximum(g[:, 0], a[:, 0])).clamp_(min=0)
    inter.mul_(torch.minimum(g[:, 3], a[:, 3]).sub_(torch.maximum(g[:, 1], a[:, 1])).clamp_(min=0))
    union = box_area(boxes).index_select(0, owner).add_(box_area(anchors).index_select(0, anchor))
    return inter.div_(union.sub_(inter).clamp_(min=1e-9))
