"""Iteration-based training of a dense detector whose label assignment is the run's method.

One step (`step.TrainStep`): forward -> the method's loss (by default: assignment on detached predictions,
no grad, then the dense losses) -> backward -> the optimizer (SGD or AdamW, `optim.py`) -> with
`train.ema_decay` > 0, the weights' EMA update.
Everything measured is reported through `TrainHooks`; nothing here knows about tracking.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from detector import distributed
from detector.config import Config, config_to_dict
from detector.data.build import build_datasets
from detector.data.sampler import build_train_loader
from detector.engine.checkpoint import (LAST, CheckpointError, check_trained_with, claim_workdir,
                                        load_checkpoint, load_weights, provenance, save_checkpoint)
from detector.engine.diagnostics import GT_WITHOUT_POS_MEAN, RUN_SECONDS, assignment_diagnostics
from detector.engine.ema import ModelEma
from detector.engine.evaluate import evaluate_metrics, evaluate_model
from detector.engine.hooks import TrainHooks
from detector.engine.optim import build_optimizer, lr_at, set_lr
from detector.engine.records import positives_histogram, with_names
from detector.engine.step import TrainStep
from detector.model.detector import DenseDetector
from detector.run_key import run_dir, run_key

log = logging.getLogger("anchorlab")


@dataclass
class TrainResult:
    status: str  # "FINISHED", "FAILED" or "PRUNED"
    reason: str = ""
    iterations: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    wall_time: float = 0.0  # seconds, over every process of the run (`RUN_SECONDS`)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The run's device; each process of a data-parallel run on GPUs takes the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and distributed.active():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def data_parallel(model: torch.nn.Module, cfg: Config, device: torch.device) -> torch.nn.Module:
    """`model` wrapped for a data-parallel run (DistributedDataParallel; SyncBatchNorm with
    `model.backbone.sync_bn` on GPUs), or `model` itself in one process. Evaluation and checkpoints use `model`."""
    if not distributed.active():
        return model
    if cfg.model.backbone.sync_bn and not cfg.model.backbone.frozen_bn:
        if device.type != "cuda":
            raise distributed.DistributedError("model.backbone.sync_bn needs GPUs (torch's SyncBatchNorm runs on CUDA "
                                               "only): use model.backbone.frozen_bn on the CPU")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def train(cfg: Config, workspace: Path, hooks: TrainHooks | None = None, resume: bool = False,
          workdir: Path | None = None) -> TrainResult:
    """Train `cfg` to its last iteration (or resume from `workdir`'s last checkpoint), then evaluate.

    `workdir` holds the checkpoints and evaluation files (default `checkpoints/<run key>` in `workspace`;
    tracked runs pass a folder of their own). One training holds a workdir at a time: a second one there
    raises `CheckpointError` (`checkpoint.claim_workdir`). Resuming checks that the checkpoint was trained
    with this config's model (`checkpoint.check_trained_with`; an unreadable or foreign one raises
    `CheckpointError`). Before every checkpoint is written, `hooks.before_checkpoint` makes what was
    reported so far durable, so a run resumed from it has no gap; the last checkpoint is written before
    the final evaluation.

    A non-finite loss stops the run as FAILED with reason "diverged at iteration N" (1-based); so does an
    assigner that gives no positive for `train.fail_without_positives` iterations in a row. With
    `train.eval_every` > 0 the val split is evaluated every that many iterations (`hooks.on_eval` at that
    step); a hook whose `should_stop` then says so ends the run as PRUNED at that iteration. With
    `train.ema_decay` > 0 every evaluation (during training and at the end) is of the weights' EMA
    (`engine.ema`), which checkpoints carry as "ema".
    """
    device_type = torch.device(cfg.train.device if cfg.train.device != "auto" else
                               "cuda" if torch.cuda.is_available() else "cpu").type
    joined = not distributed.active()
    group = distributed.setup(cfg.train.nproc, device_type, cfg.train.batch_size)
    try:
        if not group.main:  # the main rank owns the folder, the tracking and the decision to resume
            workdir, resume = distributed.broadcast(None)
            return _train(cfg, Path(workspace), TrainHooks(), resume, Path(workdir))
        workdir = Path(workdir) if workdir is not None else run_dir(workspace, run_key(cfg))
        with claim_workdir(workdir):
            distributed.broadcast((str(workdir), resume))
            return _train(cfg, Path(workspace), hooks or TrainHooks(), resume, workdir)
    finally:
        if joined and group.world > 1:
            distributed.teardown()


def _train(cfg: Config, workspace: Path, hooks: TrainHooks, resume: bool, workdir: Path) -> TrainResult:
    """`train` in a workdir this process holds."""
    t0 = time.perf_counter()
    tc = cfg.train
    if tc.num_threads > 0:
        torch.set_num_threads(tc.num_threads)
    seed_everything(tc.seed, tc.deterministic)
    group = distributed.group()
    device = resolve_device(tc.device, group.local_rank)
    torch.set_flush_denormal(tc.flush_denormal)

    train_set, val_set = build_datasets(cfg, workspace)
    num_classes = cfg.model.num_classes or train_set.num_classes
    class_names = [c["name"] for c in train_set.categories]  # label -> name, for the figures' records
    model = DenseDetector(cfg.model, num_classes).to(device)
    trained = data_parallel(model, cfg, device)  # the model itself in one process
    optimizer = build_optimizer(model, tc)
    amp_dtype = getattr(torch, tc.amp_dtype)
    # CUDA: either precision; the CPU: bfloat16 only (CPU autocast's one fast low precision), so that a bf16 run's
    # path (autocast, no scaler) can be checked without a GPU; float16 on the CPU trains in float32 as before
    use_amp = tc.amp and (device.type == "cuda" or amp_dtype == torch.bfloat16)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)  # bf16 needs none

    meta = provenance(cfg)  # stored in every checkpoint: what the weights were trained with
    start, state = 0, {}
    if resume and (workdir / LAST).is_file():
        state = load_checkpoint(workdir / LAST, map_location=device)
        check_trained_with(state, cfg, workdir / LAST)
        if "optimizer" not in state:
            raise CheckpointError(f"checkpoint {workdir / LAST} holds no optimizer state: it cannot be resumed")
        load_weights(model, state["model"], workdir / LAST)
        optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        start = int(state["iteration"])
        t0 -= float(state.get("elapsed_s", 0.0))  # the processes before this one, up to this checkpoint
        log.info("resumed from %s at iteration %d", workdir / LAST, start)
    # the EMA starts at the (loaded) weights; a resumed run restores its state (a checkpoint without "ema",
    # e.g. from before EMA, keeps that start: the warm-up counts again from there)
    ema = ModelEma(model, tc.ema_decay) if tc.ema_decay > 0 else None
    if ema is not None and "ema" in state:
        ema.load_state_dict(state["ema"])
    eval_model = ema.module if ema is not None else model

    hooks.on_start(config_to_dict(cfg), workdir, start)
    data_counts = {f"data/train_{k}": int(v) for k, v in train_set.report.as_dict().items()}
    data_counts.update({f"data/val_{k}": int(v) for k, v in val_set.report.as_dict().items()})
    hooks.on_data(data_counts)
    for name, ds in (("train", train_set), ("val", val_set)):
        log.info("%s data: %s", name, ds.report.summary())

    step = TrainStep(trained, cfg)
    loader = build_train_loader(train_set, tc.batch_size, tc.seed, start_iteration=start, num_workers=cfg.data.num_workers,
                                rank=group.rank, world=group.world, pin_memory=device.type == "cuda")
    batches = iter(loader)
    model.train()
    last_ckpt = workdir / LAST if start else None
    without_positives = 0  # iterations in a row whose batch held GTs but got no positive anchor
    no_pos_sum, no_pos_n = 0.0, 0  # share of GTs without a positive anchor, summed over the logged iterations
    for it in range(start, tc.iterations):
        t_data = time.perf_counter()
        batch = next(batches).to(device, non_blocking=True)
        t_step = time.perf_counter()
        lr = lr_at(it, tc)
        set_lr(optimizer, lr)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            losses, result, counts = step(batch)
        loss = losses["loss"]
        # one host sync for both checks: a non-finite loss (on any rank), and a global batch with GTs but no
        # positive (on every rank); every rank takes the same branch
        nonfinite, positive = distributed.any_rank(torch.stack([~torch.isfinite(loss).detach(),
                                                                 result.positive.any() | ~batch.gt_valid.any()]))
        finite, no_positive = not nonfinite, not positive
        without_positives = without_positives + 1 if no_positive else 0
        reason = None
        if not finite:
            reason = f"diverged at iteration {it + 1}"
        elif 0 < tc.fail_without_positives <= without_positives:
            reason = (f"no positive anchors for {without_positives} iterations in a row "
                      f"(iterations {it + 2 - without_positives}-{it + 1}): the assigner found none")
        if reason:
            log.error(reason)
            hooks.on_end("FAILED", reason)
            return TrainResult("FAILED", reason, it, checkpoint=last_ckpt, wall_time=time.perf_counter() - t0)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if tc.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema.update(model)
        done = it + 1
        if done % tc.log_every == 0 or done == tc.iterations:
            scalars = {k: v.item() for k, v in losses.items()}
            scalars.update(assignment_diagnostics(result, batch.gt_valid, counts))
            if "assign/gt_without_pos" in scalars:
                no_pos_sum, no_pos_n = no_pos_sum + scalars["assign/gt_without_pos"], no_pos_n + 1
            scalars.update(step.method.summary(result))
            now = time.perf_counter()
            scalars.update({"lr": lr, "time/step_s": now - t_step, "time/data_s": t_step - t_data,
                            "time/assign_s": step.assign_seconds})
            hooks.on_iteration(done, distributed.mean_scalars(scalars))  # the ranks' mean; the main rank logs
        if tc.record_every > 0 and (done % tc.record_every == 0 or done == 1):
            hooks.on_records(done, "positives_per_gt", positives_histogram(result, batch.gt_valid))
            for kind, records in step.method.records(result, tc.record_gts, done).items():
                hooks.on_records(done, kind, with_names(records, batch.image_ids, class_names))
        if tc.checkpoint_every > 0 and done % tc.checkpoint_every == 0 and done < tc.iterations:
            hooks.before_checkpoint(done)
            if group.main:
                save_checkpoint(workdir / LAST, model, optimizer, scaler, done, ema,
                                {**meta, "elapsed_s": time.perf_counter() - t0})
                hooks.on_checkpoint(done, workdir / LAST)
            distributed.barrier()  # no rank runs ahead of a checkpoint it might be resumed from
            last_ckpt = workdir / LAST
        if tc.eval_every > 0 and done % tc.eval_every == 0 and done < tc.iterations:
            metrics = evaluate_metrics(eval_model, val_set, cfg, device, progress=hooks.on_eval_progress)
            model.train()
            hooks.on_eval(done, metrics, {})
            if distributed.broadcast(hooks.should_stop(done)):  # the main rank's pruner decides for all
                reason = f"pruned at iteration {done} (val AP {100 * metrics.get('AP', float('nan')):.1f})"
                log.info(reason)
                hooks.on_end("PRUNED", reason)
                return TrainResult("PRUNED", reason, done, metrics, checkpoint=last_ckpt,
                                   wall_time=time.perf_counter() - t0)

    if no_pos_n:  # one number per run for tables: the mean over the iterations this process logged
        hooks.on_iteration(tc.iterations, {GT_WITHOUT_POS_MEAN: no_pos_sum / no_pos_n})
    hooks.before_checkpoint(tc.iterations)
    if group.main:
        save_checkpoint(workdir / LAST, model, optimizer, scaler, tc.iterations, ema,
                        {**meta, "elapsed_s": time.perf_counter() - t0})
        hooks.on_checkpoint(tc.iterations, workdir / LAST)
    distributed.barrier()
    last_ckpt = workdir / LAST
    result = TrainResult("FINISHED", iterations=tc.iterations, checkpoint=last_ckpt)
    if tc.eval_at_end:
        metrics, files = evaluate_model(
            eval_model, val_set, cfg, device, workdir / "eval", progress=hooks.on_eval_progress
        )
        hooks.on_eval(tc.iterations, metrics, files)
        result.metrics, result.files = metrics, files
    result.wall_time = time.perf_counter() - t0
    hooks.on_iteration(tc.iterations, {RUN_SECONDS: result.wall_time})
    hooks.on_end("FINISHED")
    return result
