"""PAA assignment speed: anchorlab's batched assigner against a per-GT scikit-learn loop like the reference codes'.

The reference loop follows kkhoot/PAA (`compute_paa`): per image, first matching and anchor scores;
then per GT a loop over levels (nonzero + topk) and one sklearn GaussianMixture fit + predict +
score_samples on CPU, then the Fig. 3 (c) prefix rule. Both get identical inputs (COCO-like: 800 px,
one anchor per location, ~7 GTs per image); the labels' agreement is the share of anchors with
the same (GT index / background) label, and of GTs with the same positive set.

    python bench/paa_assign.py                  # CPU, 16 and 64 images
    python bench/paa_assign.py --device cuda    # batched side on the GPU (the reference stays on CPU)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.assigners.base import BG, AssignInputs  # noqa: E402
from detector.assigners.paa import anchor_scores, assign_paa, first_matching  # noqa: E402
from detector.boxes import batched_box_iou  # noqa: E402
from detector.config import AnchorConfig, PAAConfig  # noqa: E402
from detector.model.anchors import grid_anchors  # noqa: E402


def make_inputs(images: int, gts_per_image: int, size: int, num_classes: int, seed: int) -> AssignInputs:
    g = torch.Generator().manual_seed(seed)
    cfg = AnchorConfig()
    sizes = [(-(-size // s), -(-size // s)) for s in cfg.strides]
    anchors, counts = grid_anchors(sizes, cfg)
    m = gts_per_image
    wh = torch.exp(torch.empty(images, m, 2).uniform_(np.log(24), np.log(400), generator=g))
    xy = torch.rand(images, m, 2, generator=g) * (size - wh)
    gt = torch.cat([xy, xy + wh], 2)
    n_valid = torch.randint(max(1, m - 4), m + 1, (images,), generator=g)  # 3..7 GTs: padded rows exist
    valid = torch.arange(m)[None] < n_valid[:, None]
    a = anchors.shape[0]
    logits = torch.randn(images, a, num_classes, generator=g) - 4.0
    pred = anchors[None] + torch.randn(images, a, 4, generator=g) * 0.15 * (anchors[:, 2:] - anchors[:, :2]).repeat(1, 2)
    return AssignInputs(anchors=anchors, num_per_level=counts, strides=cfg.strides, gt_boxes=gt,
                        gt_labels=torch.randint(0, num_classes, (images, m), generator=g), gt_valid=valid,
                        cls_logits=logits, pred_boxes=pred)


def reference_assign(inputs: AssignInputs, cfg: PAAConfig) -> tuple[torch.Tensor, int]:
    """Per-image, per-GT loop with sklearn, as the official code; returns labels (B, A) and the number of fits."""
    from sklearn.mixture import GaussianMixture

    b, m = inputs.gt_labels.shape
    out = torch.full((b, inputs.anchors.shape[0]), BG, dtype=torch.long)
    fits = 0
    for i in range(b):
        one = AssignInputs(anchors=inputs.anchors, num_per_level=inputs.num_per_level, strides=inputs.strides,
                           gt_boxes=inputs.gt_boxes[i:i + 1], gt_labels=inputs.gt_labels[i:i + 1],
                           gt_valid=inputs.gt_valid[i:i + 1], cls_logits=inputs.cls_logits[i:i + 1],
                           pred_boxes=inputs.pred_boxes[i:i + 1])
        iou = batched_box_iou(one.gt_boxes, one.anchors)
        matched, _ = first_matching(iou, one.gt_valid, cfg)
        scores = anchor_scores(one, matched, cfg)[0]
        matched = matched[0]
        for gt in range(m):
            if not one.gt_valid[0, gt]:
                continue
            cand, start = [], 0
            for n in inputs.num_per_level:  # per level: nonzero + topk, as compute_paa
                pool = torch.nonzero(matched[start:start + n] == gt).flatten()
                if pool.numel():
                    k = min(cfg.topk, pool.numel())
                    top = scores[start:start + n][pool].topk(k, largest=False).indices
                    cand.append(pool[top] + start)
                start += n
            if not cand:
                continue
            cand = torch.cat(cand)
            if cand.numel() == 1:
                out[i, cand] = gt
                continue
            s, order = scores[cand].sort()
            x = s.view(-1, 1).cpu().numpy()
            gmm = GaussianMixture(2, weights_init=[0.5, 0.5], means_init=[[x.min()], [x.max()]],
                                  precisions_init=[[[1.0]], [[1.0]]])
            gmm.fit(x)
            comp, dens = gmm.predict(x), gmm.score_samples(x)
            fits += 1
            fgs = comp == 0
            if fgs.any():
                peak = np.where(fgs & (dens == dens[fgs].max()))[0].min()
                out[i, cand[order[: peak + 1]]] = gt
            else:
                out[i, cand] = gt
    return out, fits


def per_gt_stage_seconds(inputs: AssignInputs, cfg: PAAConfig, repeats: int, sync) -> float:
    """Time of what the reference runs per GT in Python (candidates, GMM, separation), batched."""
    from detector.assigners.paa import select_candidates, split_candidates

    iou = batched_box_iou(inputs.gt_boxes, inputs.anchors)
    matched, _ = first_matching(iou, inputs.gt_valid, cfg)
    scores = anchor_scores(inputs, matched, cfg)
    m = inputs.gt_labels.shape[1]

    def stage():
        cand, s, v = select_candidates(scores, matched, m, inputs.num_per_level, cfg.topk)
        rows = v.any(2)
        order = s[rows].masked_fill(~v[rows], float("inf")).argsort(dim=1, stable=True)
        return split_candidates(s[rows].gather(1, order), v[rows].gather(1, order), cfg)

    return timed(stage, repeats, sync)[0]


def timed(fn, repeats: int, sync) -> tuple[float, object]:
    result, times = None, []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2], result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, nargs="+", default=[16, 64])
    p.add_argument("--gts", type=int, default=7)
    p.add_argument("--size", type=int, default=800)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--float64", action="store_true", help="fit the GMM in float64 (assign.paa.gmm_float64)")
    a = p.parse_args()
    torch.set_flush_denormal(True)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    cfg = PAAConfig(gmm_float64=a.float64)
    reference_assign(make_inputs(2, a.gts, a.size, 80, seed=0), cfg)  # warm-up: imports, first sklearn fit
    print(f"threads {torch.get_num_threads()}; PAA assignment, {a.size} px, 1 anchor/location, up to {a.gts} GTs/image, topk {cfg.topk}/level; "
          f"batched on {a.device}, reference = per-GT sklearn loop on cpu")
    for images in a.images:
        inputs = make_inputs(images, a.gts, a.size, 80, seed=images)
        dev_inputs = AssignInputs(**{k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in vars(inputs).items()})
        assign_paa(dev_inputs, cfg)  # warm-up
        t_ours, ours = timed(lambda: assign_paa(dev_inputs, cfg), a.repeats, sync)
        t_ref, (ref, fits) = timed(lambda: reference_assign(inputs, cfg), 1, lambda: None)
        t_stage = per_gt_stage_seconds(dev_inputs, cfg, a.repeats, sync)
        ours = ours.matched_gt.cpu()
        agree = (ours == ref).float().mean().item()
        per_gt = []
        for i in range(images):
            for g in range(a.gts):
                if inputs.gt_valid[i, g]:
                    per_gt.append(torch.equal(ours[i] == g, ref[i] == g))
        print(f"  {images:3d} images, {int(inputs.gt_valid.sum()):4d} GTs ({fits} GMM fits): "
              f"batched {1000 * t_ours:8.1f} ms   reference {1000 * t_ref:9.1f} ms   speed-up {t_ref / t_ours:7.1f}x   "
              f"anchor labels agree {100 * agree:.3f}%   GT positive sets agree {100 * np.mean(per_gt):.1f}%   "
              f"(batched per-GT stage alone: {1000 * t_stage:.1f} ms)")


if __name__ == "__main__":
    main()
