"""The live display of a study run: rows done / running / failed / pending, each worker's row, iteration, ETA."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ablation.execution.launcher import count_states
from ablation.study.load import Study

if TYPE_CHECKING:
    from ablation.execution.launcher import PlanEntry


class ProgressDisplay:
    """Rich progress of a study run: rows done/running/failed/pending; each worker's row, iteration, ETA.

    On a terminal a live panel is redrawn; either way one line is printed per started or ended run.
    """

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console()
        self.live = None

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

    def _say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def _name(self, key: str) -> str:
        run = self.runs.get(key)
        return run.run_name if run else key

    def handle(self, event) -> None:
        index, kind, data = event
        key = data.get("key", "")
        now = time.monotonic()
        if kind == "start":
            self.state[key] = "running"
            self.workers[index] = {"key": key, "it": 0, "total": data["total"], "phase": "train", "rate": 0.0,
                                   "t": now, "it0": None}
            self._say(f"  {'start':<12}{self._name(key)}  (worker {index})")
        elif kind == "iter" and index in self.workers:
            w = self.workers[index]
            if data["phase"] == "train" and w["it0"] is not None and data["it"] > w["it"] and now > w["t"]:
                rate = (data["it"] - w["it"]) / (now - w["t"])
                w["rate"] = rate if not w["rate"] else 0.7 * w["rate"] + 0.3 * rate
            w.update(it=data["it"], phase=data["phase"], t=now, it0=data["it"] if w["it0"] is None else w["it0"])
            if data["phase"] == "eval":
                w["eval_total"] = data.get("total", 0)
        elif kind == "end":
            self.workers.pop(index, None)
            status = data["status"]
            self.state[key] = {"FINISHED": "finished", "FAILED": "failed", "PRUNED": "failed"}.get(status, "pending")
            detail = f"AP {data['ap']:.1f}" if data.get("ap") is not None else data.get("reason", "")
            self._say(f"  {status.lower():<12}{self._name(key)}  {detail}".rstrip())
        elif kind == "held":
            self._say(f"  {'waiting':<12}{self._name(key)}  (another process trains this run key; its result is reused)")
        elif kind == "skip":
            self.state[key] = data["state"]
        elif kind == "exit":
            self.workers.pop(index, None)
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
        return _clock(left / rate)

    def _render(self):
        from rich.console import Group
        from rich.text import Text

        counts = {k: sum(s == k for s in self.state.values()) for k in ("finished", "running", "failed", "pending")}
        head = Text.assemble((self.title, "bold"), f"  {counts['finished']} done · {counts['running']} running · "
                             f"{counts['failed']} failed · {counts['pending']} pending · elapsed "
                             f"{_clock(time.monotonic() - self.t0)} · ETA {self._eta()}")
        lines = [head]
        for index, w in sorted(self.workers.items()):
            if w["phase"] == "eval":
                where = f"eval {w['it']}/{w.get('eval_total', '?')}"
            else:
                left = (w["total"] - w["it"]) / w["rate"] if w["rate"] else None
                where = f"it {w['it']}/{w['total']}  {w['rate']:.2f} it/s  ETA {_clock(left) if left else '-'}"
            lines.append(Text(f"  worker {index}  {self._name(w['key'])}  {where}"))
        return Group(*lines)

    def tick(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


__all__ = ["ProgressDisplay"]
