"""AP reached per CPU-minute for each lever of the CPU profile: trains one short run per lever (no tracking)
and prints val AP at every evaluation against the training time spent so far.

    python bench/profile_levers.py -c studies/configs/atss.yaml -c studies/configs/quick.yaml \
        --lever base --lever "w32=model.head.width=32;model.head.fpn_width=32" --eval-every 250

A lever is NAME or NAME=override;override;... (the `--set` syntax of `anchorlab train`). `--set` applies to
every lever. Training minutes exclude evaluation; `wall` includes it. AP at an intermediate evaluation is
mid-schedule (before the learning-rate decay), so compare levers at their final evaluation, or run each
schedule length as a lever of its own. Also printed: the share of GTs that got no positive anchor (mean
over the run's iterations). Take time figures alone on the machine: a second busy process slows each
several-fold (AP figures do not depend on it).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", action="append", default=[])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--lever", action="append", default=[], help="NAME or NAME=override;override")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--workspace", default=str(ROOT / "anchorlab-runs"))
    args = ap.parse_args()

    from detector.config import load_config
    from detector.engine.hooks import TrainHooks
    from detector.engine.train import train

    class Timing(TrainHooks):
        def __init__(self, name: str):
            self.name, self.train_s, self.no_pos, self.n = name, 0.0, 0.0, 0
            self.t0 = time.perf_counter()

        def on_iteration(self, iteration, scalars):
            if "time/step_s" in scalars:
                self.train_s += scalars["time/step_s"] + scalars["time/data_s"]
                self.no_pos += scalars.get("assign/gt_without_pos", 0.0)
                self.n += 1

        def on_eval(self, iteration, metrics, files):
            share = 100 * self.no_pos / max(self.n, 1)
            print(f"{self.name:<24} it {iteration:>5}  train {self.train_s / 60:5.2f} min  "
                  f"wall {(time.perf_counter() - self.t0) / 60:5.2f} min  AP {100 * metrics['AP']:5.1f}  "
                  f"AP50 {100 * metrics['AP50']:5.1f}  APs {100 * metrics['APs']:5.1f}  "
                  f"APl {100 * metrics['APl']:5.1f}  GTs w/o positive {share:4.1f}%", flush=True)

    configs = args.config or [str(ROOT / "studies/configs/atss.yaml"), str(ROOT / "studies/configs/quick.yaml")]
    for lever in args.lever or ["base"]:
        name, _, spec = lever.partition("=")
        overrides = list(args.overrides) + [s for s in spec.split(";") if s]
        if args.eval_every:
            overrides.append(f"train.eval_every={args.eval_every}")
        cfg = load_config(configs, overrides + ["train.checkpoint_every=0", "train.record_every=0"])
        with tempfile.TemporaryDirectory() as workdir:
            result = train(cfg, Path(args.workspace), Timing(name), workdir=Path(workdir))
        print(f"{name:<24} {result.status} in {result.wall_time / 60:.2f} min  ({'; '.join(overrides)})", flush=True)


if __name__ == "__main__":
    main()
