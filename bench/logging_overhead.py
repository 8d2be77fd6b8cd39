"""What does tracking cost a training iteration? MlflowHooks against naive MLflow calls.

Logs `--scalars` scalars per iteration to a fresh local SQLite store in a temp folder, three ways:
  hooks      MlflowHooks.on_iteration: buffered, one log_batch per `--flush-every` iterations
             (amortised: the flushes are inside the timed loop, plus the final flush);
  per-iter   one mlflow.log_metrics(dict, step) call per iteration (one transaction per iteration);
  per-point  one mlflow.log_metric(key, value, step) call per scalar (the naive way).
and prints ms per iteration and the overhead as a share of a `--step-ms` training step.

    python bench/logging_overhead.py [--iterations 500] [--naive-iterations 30] [--step-ms 250]
"""
from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablation.tracking.store import ensure_experiment, resolve_tracking_uri, workspace_dir  # noqa: E402
from ablation.tracking.writer import MlflowHooks  # noqa: E402


def scalars_at(it: int, n: int) -> dict[str, float]:
    return {f"loss/term{j}": math.exp(-it / 300) + 0.01 * j for j in range(n)}


def bench_hooks(client, exp_id: str, iterations: int, n: int, flush_every: int) -> tuple[float, float]:
    """(mean ms per iteration including flushes, worst single iteration in ms)."""
    run_id = client.create_run(exp_id, run_name="hooks").info.run_id
    hooks = MlflowHooks(client, run_id, flush_every=flush_every, flush_seconds=1e9)
    durations = []
    start = time.perf_counter()
    for it in range(1, iterations + 1):
        t = time.perf_counter()
        hooks.on_iteration(it, scalars_at(it, n))
        durations.append(time.perf_counter() - t)
    hooks.flush()
    total = time.perf_counter() - start
    client.set_terminated(run_id)
    assert len(client.get_metric_history(run_id, "loss/term0")) == iterations
    return 1000 * total / iterations, 1000 * max(durations)


def bench_fluent(exp_id: str, uri: str, iterations: int, n: int, per_point: bool) -> float:
    import mlflow

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=exp_id, run_name="per-point" if per_point else "per-iter"):
        start = time.perf_counter()
        for it in range(1, iterations + 1):
            values = scalars_at(it, n)
            if per_point:
                for key, value in values.items():
                    mlflow.log_metric(key, value, step=it)
            else:
                mlflow.log_metrics(values, step=it)
        total = time.perf_counter() - start
    return 1000 * total / iterations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=500, help="iterations for MlflowHooks")
    ap.add_argument("--naive-iterations", type=int, default=30, help="iterations for the unbuffered ways")
    ap.add_argument("--scalars", type=int, default=20, help="scalars logged per iteration")
    ap.add_argument("--flush-every", type=int, default=50)
    ap.add_argument("--step-ms", type=float, default=250.0, help="training step time to compare with")
    ap.add_argument("--repeats", type=int, default=3, help="repeat each measurement; the median is shown")
    args = ap.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="anchorlab-bench-") as tmp:
        ws = workspace_dir(tmp)
        uri = resolve_tracking_uri(None, ws)
        exp_id = ensure_experiment("bench", uri, ws)
        client = MlflowClient(uri)
        bench_hooks(client, exp_id, 10, args.scalars, args.flush_every)  # warm-up: imports, connections

        hooks = [bench_hooks(client, exp_id, args.iterations, args.scalars, args.flush_every)
                 for _ in range(args.repeats)]
        rows = [
            (f"MlflowHooks (log_batch every {args.flush_every} it)", args.iterations,
             statistics.median(h[0] for h in hooks)),
            ("mlflow.log_metrics once per iteration", args.naive_iterations,
             statistics.median(bench_fluent(exp_id, uri, args.naive_iterations, args.scalars, False)
                               for _ in range(args.repeats))),
            ("mlflow.log_metric once per scalar", args.naive_iterations,
             statistics.median(bench_fluent(exp_id, uri, args.naive_iterations, args.scalars, True)
                               for _ in range(args.repeats))),
        ]
        worst = max(h[1] for h in hooks)

    print(f"{args.scalars} scalars per iteration, local SQLite store, median of {args.repeats} repeats; "
          f"overhead relative to a {args.step_ms:g} ms step")
    print(f"{'method':<44} {'iterations':>10} {'ms/iter':>9} {'overhead':>9}")
    for name, iters, ms in rows:
        print(f"{name:<44} {iters:>10} {ms:>9.3f} {100 * ms / args.step_ms:>8.2f}%")
    print(f"MlflowHooks: slowest single iteration (one with a flush) {worst:.1f} ms")


if __name__ == "__main__":
    main()
