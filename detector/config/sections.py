"""The shared config sections: dataclasses with the papers' defaults, importing nothing from `detector`.

Every method's own section (`assign.<method>`) is in `assign_sections.py`, joined into `AssignConfig` by
`detector.config.schema`. Like the whole package, nothing here imports torch.

Defaults are the papers' settings (ResNet-50, 800 px, 1x schedule at 16 images per batch); the CPU
profile lives in `studies/configs/quick.yaml`.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SynthConfig:
    """Options of the embedded synthetic benchmark (see `detector.data.synth`)."""

    train: int = 2000
    val: int = 500
    size: int = 320
    seed: int = 0
    slender_share: float = 0.15  # share of objects with aspect ratio between 1:3 and 1:8
    acentric_share: float = 0.25  # share of rings, L-shapes and crescents
    crowding: float = 0.3  # probability that an image holds a cluster of overlapping objects
    # 0..1, density of unannotated distractor shapes and background texture (0.2: ~5 distractors per image;
    # 0.5 until KEY_VERSION 3, which a 5-minute CPU run could not learn to reject: AP 7)
    clutter: float = 0.2
    max_objects: int = 30
    # px, smallest sqrt(w*h) of an object's drawn extent. 16 puts the median box (~49 px at 320 px) at 0.76x
    # the smallest anchor (8 x stride 8 = 64 px), near COCO's ~1.1x at 800 px; 8 (until KEY_VERSION 3) gave 0.55x.
    min_object_size: float = 16.0
    max_object_frac: float = 0.6  # largest sqrt(w*h) as a fraction of the image side
    min_visible: float = 0.4  # every annotated object keeps at least this share of its pixels visible


@dataclass
class VocConfig:
    """A VOC-style dataset (see `detector.data.voc`): root/Annotations/*.xml, root/ImageSets/Main/<split>.txt,
    root/JPEGImages/. Each split is converted once into a COCO JSON in the workspace, so training and both
    evaluations read it like any COCO set; VOC's `difficult` objects become crowd boxes there (`data.crowd`)."""

    root: str = ""  # e.g. ~/data/VOCdevkit/VOC2007
    train_split: str = "trainval"  # VOC2007 protocol: train on trainval, test on test
    val_split: str = "test"
    classes: str = "voc"  # "voc": the 20 VOC classes in the devkit's order; "data": sorted names of the train split


@dataclass
class DataConfig:
    """Where the images come from and how they are batched."""

    dataset: str = "synth"  # "synth" (generated into the workspace), "coco" (paths below) or "voc" (`voc`)
    synth: SynthConfig = field(default_factory=SynthConfig)
    voc: VocConfig = field(default_factory=VocConfig)
    train_images: str = ""
    train_json: str = ""
    val_images: str = ""
    val_json: str = ""
    min_size: list[int] = field(default_factory=lambda: [800])  # shorter side; several = multi-scale
    max_size: int = 1333
    test_min_size: int = 800
    flip_prob: float = 0.5
    crowd: str = "ignore"  # "ignore": crowd boxes (and VOC's difficult objects) become ignore regions; "drop": removed
    size_divisibility: int = 32
    num_workers: int = 0
    # Keep each decoded image in memory after its first read (uint8; ~0.3 MB per 320 px image, per loader
    # worker): on the CPU profile PNG decoding is ~12% of a step, and the set is read every epoch.
    cache_images: bool = False
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class BackboneConfig:
    name: str = "resnet50"  # resnet18 | resnet34 | resnet50 | resnet101 | tiny
    weights: str = ""  # local state-dict path; empty = random init (nothing is ever downloaded)
    frozen_bn: bool = False
    sync_bn: bool = False  # a data-parallel run on GPUs: BatchNorm statistics over every process's images
    tiny_width: int = 32  # base width of the `tiny` CPU backbone
    tiny_depth: int = 1  # residual convs per stage of the `tiny` backbone


@dataclass
class AnchorConfig:
    strides: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    octave_base_scale: float = 8.0
    scales_per_octave: int = 1
    aspect_ratios: list[float] = field(default_factory=lambda: [1.0])
    center_offset: float = 0.5  # anchor centre at (i + offset) * stride


def anchors_per_location(cfg: AnchorConfig) -> int:
    """Anchors at one location (aspect ratios x octave scales); here, not in `detector.model.anchors`, because the
    validator needs it without torch."""
    return len(cfg.aspect_ratios) * cfg.scales_per_octave


@dataclass
class HeadConfig:
    num_convs: int = 4
    width: int = 256
    fpn_width: int = 256
    norm: str = "gn"  # gn | none
    gn_groups: int = 32
    prior_prob: float = 0.01
    aux: str = "none"  # none | iou | centerness  (extra 1-channel branch on the box tower)


@dataclass
class BoxCoderConfig:
    weights: list[float] = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])
    clamp: float = 4.135166556742356  # log(1000 / 16), as maskrcnn-benchmark and torchvision


@dataclass
class ModelConfig:
    num_classes: int = 0  # 0 = taken from the dataset
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    box_coder: BoxCoderConfig = field(default_factory=BoxCoderConfig)
    channels_last: bool = False  # NHWC convolutions: ~15% faster steps on the CPU profile; same model


@dataclass
class LossConfig:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    reg: str = "giou"  # giou | iou (-log IoU: UnitBox, the Pseudo-IoU paper's AF-baseline) | l1
    reg_weight: float = 1.0
    reg_iou_weighted: bool = False  # PAA: weight each positive's GIoU loss by its IoU target, normalise by their sum
    # FCOS (mmdetection, the official Pseudo-IoU head): weight it by the positive's centerness target instead
    reg_centerness_weighted: bool = False
    aux_weight: float = 1.0


@dataclass
class TrainConfig:
    iterations: int = 90000
    batch_size: int = 16
    base_lr: float = 0.01  # learning rate per 16 images (linear scaling rule)
    optimizer: str = "sgd"  # sgd (the papers') | adamw (faster from scratch on the CPU profile)
    schedule: str = "step"  # step: x gamma at each of `steps` (the papers') | cosine: to 0 after warm-up
    momentum: float = 0.9  # SGD momentum; AdamW's beta1
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_factor: float = 0.001
    steps: list[float] = field(default_factory=lambda: [0.667, 0.889])  # fractions of `iterations`
    gamma: float = 0.1
    grad_clip: float = 0.0  # max L2 norm; 0 = off
    # EMA of the weights (BatchNorm statistics too), evaluated instead of them; 0 = off. Warm-up: update n uses
    # min(ema_decay, (1 + n) / (10 + n)) (`detector.engine.ema`)
    ema_decay: float = 0.0
    # The run FAILS when the assigner gives no positive anchor for this many iterations in a row whose
    # batches hold GTs (0 = never): training without positives learns nothing (PAA's FSR 0.3, Table 1).
    fail_without_positives: int = 100
    amp: bool = True  # on CUDA; on the CPU only with amp_dtype bfloat16
    # autocast precision: float16 (with a GradScaler) or bfloat16 (Ampere/Hopper; float32's range, no scaler)
    amp_dtype: str = "float16"
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # processes of one data-parallel run (one per GPU; torchrun starts them: `anchorlab train --nproc N`);
    # batch_size stays the global batch, split evenly over them (`detector.distributed`)
    nproc: int = 1
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    flush_denormal: bool = True  # CPU: denormal floats slow convolutions several-fold
    checkpoint_every: int = 5000
    log_every: int = 1
    record_every: int = 100  # iterations between records for figures: positives-per-GT, GMM fits (0 = never)
    record_gts: int = 8  # GTs sampled per GMM-fit record
    eval_every: int = 0  # iterations between val evaluations during training (0 = none before the end)
    eval_at_end: bool = True


@dataclass
class VotingConfig:
    """Score voting (PAA, Sec. 3.4): kept boxes become score- and IoU-weighted averages of their neighbours."""

    enabled: bool = False
    sigma: float = 0.025  # both reference codes; one paper version prints 0.0025
    iou_thresh: float = 0.01  # neighbours: same-class pre-NMS boxes with IoU above this


@dataclass
class InferenceConfig:
    pre_nms_topk: int = 1000
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    max_detections: int = 100
    # cls score with the aux branch: none | product | sqrt_product, or auto: the method's own (`Method.score_fusion`)
    # when the head has an aux branch, else none (`postprocess.resolve_score_fusion`)
    score_fusion: str = "auto"
    # what the per-level top `pre_nms_topk` ranks (`postprocess`): "pairs" (anchor, class) by fused score
    # (torchvision-like), or "points" (anchors) by their best fused score, keeping every class of a kept point
    # (mmdetection's FCOS/ATSS `nms_pre`)
    pre_nms_candidates: str = "pairs"
    # what `score_thresh` applies to: "fused", the detection score; or "cls", the class probability before the
    # fusion (mmdetection's `multiclass_nms(score_factors=...)`)
    threshold_on: str = "fused"
    # decoded boxes into the resized image: "one_sided" (x1, y1 >= 0, x2 <= w, y2 <= h) or "two_sided" (every
    # coordinate into [0, w] or [0, h], mmdetection's `distance2bbox(max_shape)`, torchvision's `clip_boxes_to_image`)
    clip: str = "one_sided"
    voting: VotingConfig = field(default_factory=VotingConfig)


@dataclass
class EvalConfig:
    """Metrics computed besides the 12 COCO stats (see `detector.evaluation.voc_eval` and `.extra`)."""

    # PASCAL VOC mAP at IoU 0.5 over the same detections and GT file: none | 11point ("VOC07_mAP", the VOC2007
    # devkit's use_07_metric) | area ("VOC07_mAP_area", all-point, VOC2010+) | both
    voc_metric: str = "none"
    # IoU of the VOC metric: "continuous" (w = x2 - x1; on boxes read by `detector.data.voc` it equals the
    # devkit's IoU on the XML's pixel indices) | "legacy" (w = x2 - x1 + 1 on the given boxes, mmdetection's
    # use_legacy_coordinate=True)
    voc_iou: str = "continuous"
    # FreeAnchor's NMS recall, NR50 ... NR90 and their mean NR (`detector.evaluation.nms_recall`): one more NMS over
    # every candidate above inference.score_thresh per val batch
    nms_recall: bool = False
    # COCO AP per GT aspect ratio max(w/h, h/w) (`detector.evaluation.buckets`): AP_square [1, e0), AP_oblong
    # [e0, e1), AP_slender [e1, inf) for aspect_edges [e0, e1]
    aspect_ap: bool = False
    aspect_edges: list[float] = field(default_factory=lambda: [2.0, 4.0])
    # COCO AP per image crowdedness, its number of non-crowd GTs: AP_sparse [0, e0), AP_moderate [e0, e1),
    # AP_crowded [e1, inf) for crowd_edges [e0, e1]
    crowd_ap: bool = False
    crowd_edges: list[int] = field(default_factory=lambda: [5, 15])
