"""What pruning cost a search: its PRUNED trials trained to the end (`anchorlab search audit`).

A pruner stops a trial on an intermediate value; whether it stopped one that would have ended among the best
depends on how well that value predicts the final one at that step, which only a measurement tells. The
audit trains each PRUNED trial's config (its values, the search's seed, as the trial trained) to the end, as
a child of the search's parent run (tags role=audit, trial=N), through `run.execute` like the trials: a
finished run of the same key is reused, so a second audit trains nothing, and a killed one resumes. (The
pruned run itself, same key, is never resumed: it stays PRUNED.)

`Audit` ranks every trial by its final objective (complete trials' own, pruned ones' audited) and names the
pruned trials that would have entered the `top` best complete trials: what pruning lost, at the search's seed.
Single-objective searches only (two-objective searches do not prune).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ablation.execution.run import RunSpec
from ablation.search.rerun import train_for_value
from ablation.search.resolve import trial_config
from ablation.search.space import decode
from ablation.search.spec import Search


@dataclass
class AuditRow:
    number: int  # the pruned trial
    step: int | None  # where it was pruned
    at_prune: float | None  # its objective there
    final: float | None = None  # trained to the end; None when that run did not finish
    reason: str = ""  # why `final` is missing
    trained: bool = False  # False: an existing run answered


@dataclass
class Audit:
    metric: str
    maximize: bool
    top: int
    rows: list[AuditRow]  # the pruned trials, by number
    complete: dict[int, float] = field(default_factory=dict)  # the complete trials' objective, by number

    def _key(self, value: float) -> float:
        return -value if self.maximize else value

    @property
    def bar(self) -> float | None:
        """The `top`-th best complete trial's objective: a pruned trial at least this good was lost."""
        ranked = sorted(self.complete.values(), key=self._key)
        return ranked[min(self.top, len(ranked)) - 1] if ranked else None

    @property
    def lost(self) -> list[AuditRow]:
        bar = self.bar
        return [r for r in self.rows if r.final is not None and bar is not None and self._key(r.final) <= self._key(bar)]

    def ranking(self) -> list[tuple[int, float, bool]]:
        """(trial, final objective, pruned?) for every trial with a final value, best first."""
        out = [(n, v, False) for n, v in self.complete.items()] + \
              [(r.number, r.final, True) for r in self.rows if r.final is not None]
        return sorted(out, key=lambda t: (self._key(t[1]), t[0]))


def audit_pruning(search: Search, profile: str, study, parent_run_id: str, workspace, tracking_uri: str,
                  display=None) -> Audit:
    """Train the PRUNED trials to the end (module doc). `display(kind, data)`: "audit-start" {trial},
    "iter" progress, "audit-end" {trial, status, value, reason, trained}."""
    from optuna.trial import TrialState

    objective = search.objectives[0]
    complete = {t.number: float(t.values[0]) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.values}
    rows = []
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)), key=lambda t: t.number):
        step = t.last_step
        row = AuditRow(t.number, step, t.intermediate_values.get(step) if step is not None else None)
        rows.append(row)
        values = decode(search.space, t.params)
        cfg = trial_config(search, profile, values)
        tags = {"role": "audit", "trial": str(t.number), "search": search.name, "profile": profile,
                **{f"param.{k}": str(v) for k, v in values.items()}}
        spec = RunSpec(cfg, f"trial {t.number} · to the end", search.name, parent_run_id, tags, reuse=True,
                       resume=True, restart_hint="the same command trains it again")
        if display is not None:
            display("audit-start", {"trial": t.number})
        row.final, row.reason, outcome = train_for_value(spec, objective.metric, workspace, tracking_uri, display,
                                                         f"audit trial {t.number}")
        row.trained = outcome.result is not None
        if display is not None:
            display("audit-end", {"trial": t.number, "status": outcome.status, "value": row.final,
                                  "reason": row.reason, "trained": row.trained})
    return Audit(objective.metric, objective.direction == "maximize", search.rerun.top, rows, complete)


def format_audit(audit: Audit) -> str:
    """A markdown table of the pruned trials (pruned at, value there, at the end, rank among all trials) and the
    verdict line."""
    ranks = {n: i for i, (n, _, _) in enumerate(audit.ranking(), 1)}
    total = len(ranks)
    lines = [f"| trial | pruned at | {audit.metric} there | {audit.metric} at the end | rank of {total} |",
             "|--:|--:|--:|--:|--:|"]
    for r in audit.rows:
        there = "" if r.at_prune is None else f"{r.at_prune:.4g}"
        end = r.reason if r.final is None else f"{r.final:.4g}"
        lines.append(f"| {r.number} | {'' if r.step is None else r.step} | {there} | {end} | {ranks.get(r.number, '')} |")
    bar, lost = audit.bar, audit.lost
    if bar is None:
        lines += ["", "no complete trial to compare with"]
    else:
        best = f"top {audit.top} complete" if len(audit.complete) >= audit.top else f"{len(audit.complete)} complete"
        done = sum(r.final is not None for r in audit.rows)
        verdict = ("pruning lost no trial that would have entered them" if not lost else
                   f"pruning lost {len(lost)} that would have entered them: "
                   + ", ".join(f"trial {r.number} ({r.final:.4g})" for r in lost))
        lines += ["", f"{done} of {len(audit.rows)} pruned trials trained to the end; against the {best} trials "
                      f"(the last of them at {bar:.4g}), {verdict}. One seed each: "
                      "a difference within the seed noise is not a loss."]
    return "\n".join(lines)


__all__ = ["Audit", "AuditRow", "audit_pruning", "format_audit"]
