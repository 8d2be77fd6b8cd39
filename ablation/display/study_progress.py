"""The live display of a study run: rows done / running / failed / pending, each worker's row, iteration, ETA."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ablation.display.log_progress import Every, clock, default_every_s, progress_line
from ablation.execution.launcher import count_states
from ablation.study.load import Study

if TYPE_CHECKING:
    from ablation.execution.launcher import PlanEntry


class ProgressDisplay:
    """Rich progress of a study run: rows done/running/failed/pending; each worker's row, iteration, ETA.

    On a terminal a live panel is redrawn; either way one line is printed per started or ended run, and the
    workers' log lines (event "log") are printed above the panel. Elsewhere (a log file), every `every_s`
    seconds one `progress` line per running run and one for the study (`log_progress`).
    """

    def __init__(self, console=None, every_s: float | None = None):
        from rich.console import Console

        self.console = console or Console()
        self.live = None
        self.every_s = default_every_s() if every_s is None else every_s
        self.every: Every | None = None
        self.names: dict[str, str] = {}  # key -> run name, from workers' start events

    def start(self, study: Study, profile: str, entries: list[PlanEntry], n_workers: int) -> None:
        from rich.live import Live

        self.title = f"{study.name} [{profile}]"
        self.runs = {e.run.key: e.run for e in entries}
        self.state = {e.run.key: e.state if e.state in ("finished", "failed", "running") and
                      not e.action.startswith("retry") else "pending" for e in entries}
        self.workers: dict[int, dict] = {}
        self.t0 = time.monotonic()
        counts = ", ".join(f"{n} {k}" for k, n in count_states(entries).items() if n)
        self._say(f"study {self.title}: {len(entries)} runs ({counts}); {n_workers} worker(s)")
        if self.console.is_terminal:
            self.live = Live(self._render(), console=self.console, refresh_per_second=2, transient=True)
            self.live.start()
        else:
            self.every = Every(self.every_s)

    def _say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)  # a log line is never wrapped

    def _name(self, key: str) -> str:
        run = self.runs.get(key)
        # a run this invocation did not plan (another --seeds' item left in the shared queue) is named by its item
        return run.run_name if run else self.names.get(key, key)

    def handle(self, event) -> None:
        index, kind, data = event
        key = data.get("key", "")
        now = time.monotonic()
        if kind == "start":
            if data.get("name"):
                self.names[key] = data["name"]
            self.state[key] = "running"
            self.workers[index] = {"key": key, "it": 0, "total": data["total"], "phase": "train", "rate": 0.0,
                                   "t": now, "it0": None, "loss": None}
            self._say(f"  {'start':<12}{self._name(key)}  (worker {index})")
        elif kind == "iter" and index in self.workers:
            w = self.workers[index]
            if data["phase"] == "train" and w["it0"] is not None and data["it"] > w["it"] and now > w["t"]:
                rate = (data["it"] - w["it"]) / (now - w["t"])
                w["rate"] = rate if not w["rate"] else 0.7 * w["rate"] + 0.3 * rate
            w.update(it=data["it"], phase=data["phase"], t=now, it0=data["it"] if w["it0"] is None else w["it0"])
            if data["phase"] == "eval":
                w["eval_total"] = data.get("total", 0)
            elif data.get("loss") is not None:
                w["loss"] = data["loss"]
        elif kind == "end":
            self.workers.pop(index, None)
            status = data["status"]
            self.state[key] = {"FINISHED": "finished", "FAILED": "failed", "PRUNED": "failed"}.get(status, "pending")
            detail = f"AP {data['ap']:.1f}%" if data.get("ap") is not None else data.get("reason", "")
            self._say(f"  {status.lower():<12}{self._name(key)}  {detail}".rstrip())
        elif kind == "held":
            self._say(f"  {'waiting':<12}{self._name(key)}  (another process trains this run key; its result is reused)")
        elif kind == "skip":
            self.state[key] = data["state"]
        elif kind == "exit":
            self.workers.pop(index, None)
        elif kind == "log":  # a line a worker wrote (a warning): above the panel, never through it
            self._say(f"  worker {index}: {data['text']}")
        elif kind == "died":
            w = self.workers.pop(index, None)
            if w is not None:
                self.state[w["key"]] = "pending"
            self._say(f"  worker {index} died (exit code {data['code']}); its run goes back to the queue")
        self.tick()

    def _eta(self) -> str:
        rate = sum(w["rate"] for w in self.workers.values() if w["phase"] == "train")
        if rate <= 0:
            return "-"
        left = sum(max(0, w["total"] - w["it"]) for w in self.workers.values() if w["phase"] == "train")
        left += sum(self.runs[k].config.train.iterations for k, s in self.state.items() if s == "pending")
        return clock(left / rate)

    def _summary(self) -> str:
        counts = {k: sum(s == k for s in self.state.values()) for k in ("finished", "running", "failed", "pending")}
        return (f"{counts['finished']} done · {counts['running']} running · {counts['failed']} failed · "
                f"{counts['pending']} pending · elapsed {clock(time.monotonic() - self.t0)} · ETA {self._eta()}")

    def _render(self):
        from rich.console import Group
        from rich.text import Text

        head = Text.assemble((self.title, "bold"), f"  {self._summary()}")
        lines = [head]
        for index, w in sorted(self.workers.items()):
            if w["phase"] == "eval":
                where = f"eval {w['it']}/{w.get('eval_total', '?')}"
            else:
                left = (w["total"] - w["it"]) / w["rate"] if w["rate"] else None
                where = f"it {w['it']}/{w['total']}  {w['rate']:.2f} it/s  ETA {clock(left) if left else '-'}"
            lines.append(Text(f"  worker {index}  {self._name(w['key'])}  {where}"))
        return Group(*lines)

    def tick(self) -> None:
        if self.live is not None:
            self.live.update(self._render())
        elif self.every is not None and self.workers and self.every.due():
            self._log_lines()

    def _log_lines(self) -> None:
        """For a log: each running run's progress line, then the study's."""
        for _, w in sorted(self.workers.items()):
            total = w.get("eval_total", 0) if w["phase"] == "eval" else w["total"]
            self._say("  " + progress_line(self._name(w["key"]), w["it"], total, w.get("loss"), w["rate"], w["phase"]))
        self._say(f"  {'progress':<12}study {self.title}: {self._summary()}")

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


__all__ = ["ProgressDisplay"]
