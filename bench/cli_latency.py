"""How long do `anchorlab study status` and `study table` take, and which heavy packages do they load?

Runs each command `--repeat` times as a user would (a fresh `python -m cli` process), and prints per command
the median wall time to its first line on stdout (the answer) and to its exit, and whether the process loaded
torch / mlflow (`-X importtime`, one extra run). Needs a workspace that holds the study's runs, e.g. after
`anchorlab study run studies/paa_table2_methods.yaml --profile smoke --workspace WS`:

    python bench/cli_latency.py --workspace WS [--study studies/paa_table2_methods.yaml] [--profile smoke]

Times depend on the machine and its load (a training beside it doubles them): compare runs taken together.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "mlflow", "optuna", "pandas")


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(seconds to the first stdout line, seconds to exit) of one run of `cmd`."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdout.readline()
    first = time.perf_counter() - t0
    proc.stdout.read()
    if proc.wait():
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return first, time.perf_counter() - t0


def loaded(cmd: list[str], env: dict) -> list[str]:
    """The HEAVY top-level packages a run of `cmd` imports (from `python -X importtime`)."""
    out = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], cwd=ROOT, env=env, capture_output=True, text=True)
    names = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    return [name for name in HEAVY if name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--study", default="studies/paa_table2_methods.yaml")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print(f"{'command':<14}{'answer (s)':>11}{'exit (s)':>10}  loads")
    for command in ("status", "table"):
        cmd = [sys.executable, "-m", "cli", "study", command, args.study, "--profile", args.profile,
               "--workspace", str(args.workspace)]
        runs = [timed(cmd, env) for _ in range(args.repeat)]
        first, total = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"study {command:<8}{first:>11.2f}{total:>10.2f}  {', '.join(loaded(cmd, env)) or '-'}")


if __name__ == "__main__":
    main()
