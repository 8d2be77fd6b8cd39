"""A search worker: ask Optuna for trials and execute each through anchorlab's one execution path.

`work` is the loop of one worker (a spawned process, `worker_main`, or the launcher itself when there is
one worker): reap the trials of dead workers, stop when the budget holds `budget` COMPLETE + PRUNED trials
(or as many failures), wait while the live trials of others fill it, else `ask()` a trial, drop it when it
is over the budget (`storage.over_budget`) and run it (`run_trial`): draw its values (`space.suggest`),
resolve its config (`resolve.trial_config`), `execute` it as the child run `trial <n>` of the search's
parent (reuse and resume on), report a single objective at every intermediate evaluation so that the
pruner can stop it (`PruneHooks`: PRUNED in MLflow and in Optuna), and tell Optuna how it ended (FINISHED
-> COMPLETE with the objective values, PRUNED -> PRUNED, FAILED -> FAIL). An interrupted trial is failed
and enqueued again, so the next run of the command resumes its MLflow run from the last checkpoint.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

from ablation.execution.run import RunSpec, execute
from ablation.execution.worker import ProgressEvents, setup_worker_process
from ablation.search import storage as st
from ablation.search.resolve import trial_config
from ablation.search.space import build_pruner, build_sampler, suggest
from ablation.search.spec import Search
from ablation.tracking import reader, writer
from ablation.tracking.units import eval_in_percent
from detector.engine.hooks import HookList, TrainHooks


@dataclass
class WorkerArgs:
    index: int
    search: Search
    profile: str
    location: str
    study_name: str
    heartbeat_s: float
    poll_s: float
    workspace: str
    tracking_uri: str
    parent_run_id: str
    budget: int
    seed: int  # the sampler's, for this worker (`_seed`)
    threads: int  # 0: leave torch's threads alone (one worker, in this process)
    launcher_pid: int


class PruneHooks(TrainHooks):
    """Report the objective at each evaluation to the trial; stop the run when the pruner says so.
    AP-type values in percent, as the trial's final value (`execute`'s outcome) and MLflow hold them."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric, self.reported = trial, metric, -1

    def on_eval(self, iteration, metrics, files):
        value = eval_in_percent(metrics)[0].get(self.metric)
        if value is not None and math.isfinite(value):
            self.trial.report(float(value), int(iteration))
            self.reported = int(iteration)

    def should_stop(self, iteration):
        return self.reported == int(iteration) and self.trial.should_prune()


def _objectives(search: Search, outcome, uri: str) -> tuple[list[float] | None, str]:
    """The objective values of a FINISHED run: val metrics from the outcome, others ("time/step_s") from MLflow."""
    values, logged = [], None
    for obj in search.objectives:
        value = outcome.metrics.get(obj.metric)
        if value is None:
            if logged is None:
                logged = reader.run_metrics(uri, outcome.run_id)
            value = logged.get(obj.metric)
        if value is None or not math.isfinite(value):
            return None, f"objective {obj.metric} was not logged (or is not finite)"
        values.append(float(value))
    return values, ""


def _tell(study, trial, state, values=None) -> None:
    """Close the trial unless another process already did (it judged this worker dead)."""
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        study.tell(trial, values, state=state, skip_if_finished=True)
    except UpdateFinishedTrialError:
        pass


def run_trial(args: WorkerArgs, study, trial, emit) -> str:
    """Draw, execute and close one trial; returns its outcome (FINISHED | PRUNED | FAILED)."""
    from optuna.trial import TrialState

    search, n, storage, tid = args.search, trial.number, study._storage, trial._trial_id
    beater = st.Beater(storage, tid, args.heartbeat_s)
    values: dict = {}

    def close(status: str, reason: str = "", objective=None, **data) -> str:
        storage.set_trial_user_attr(tid, st.OUTCOME, status)
        if reason:
            storage.set_trial_user_attr(tid, "reason", reason)
        state = {"FINISHED": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED}.get(status, TrialState.FAIL)
        _tell(study, trial, state, objective)
        if state == TrialState.PRUNED:  # Optuna's value of a pruned trial: the last one reported
            objective = storage.get_trial(tid).values
        emit("end", number=n, outcome=status, values=objective, reason=reason, params=values, **data)
        return status

    try:
        values = suggest(trial, search.space)
        emit("start", number=n, params=values)
        config = trial_config(search, args.profile, values)
        tags = {"role": "trial", "trial": str(n), "search": search.name, "profile": args.profile,
                **{f"param.{k}": str(v) for k, v in values.items()}}
        spec = RunSpec(config, f"trial {n}", search.name, args.parent_run_id, tags, reuse=True, resume=True,
                       restart_hint="a later trial with the same values trains it from scratch")
        prune = PruneHooks(trial, search.objectives[0].metric) if len(search.objectives) == 1 else None
        hooks = HookList(prune, ProgressEvents(emit, config.train.iterations, number=n))  # "iter" events: progress
        outcome = execute(spec, args.workspace, args.tracking_uri, hooks=hooks)
    except KeyboardInterrupt:  # the run is KILLED in MLflow; the trial goes back, to be resumed
        _interrupted(study, tid)
        raise
    except Exception as exc:  # a value the config refuses, a failing store: the trial fails, the search goes on
        return close("FAILED", writer.one_line(exc))
    finally:
        beater.stop()
    wall = outcome.result.wall_time if outcome.result is not None else None
    for key, value in (("run_id", outcome.run_id), ("step", outcome.step), ("wall_s", wall),
                       ("reused_from", outcome.reused_from)):
        if value is not None:
            storage.set_trial_user_attr(tid, key, value)
    status, objective, reason = outcome.status, None, outcome.reason
    if status == "FINISHED":
        objective, why = _objectives(search, outcome, args.tracking_uri)
        status, reason = ("FINISHED", reason) if objective is not None else ("FAILED", why)
    return close(status, reason, objective, step=outcome.step, run_id=outcome.run_id,
                 reused=outcome.reused_from is not None)


def _interrupted(study, tid: int) -> None:
    """Fail an interrupted trial and enqueue it again (unless another process closed it first)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    try:
        storage.set_trial_user_attr(tid, st.OUTCOME, "interrupted")
        if storage.set_trial_state_values(tid, TrialState.FAIL):
            st.Retry()(study, storage.get_trial(tid))
    except UpdateFinishedTrialError:
        pass


def work(args: WorkerArgs, emit) -> None:
    """A worker's loop (module doc, 3): ask and run trials until the budget is met by all workers together."""
    from optuna.trial import TrialState

    search = args.search
    study, _ = st.open_study(st.open_search_storage(args.location, args.heartbeat_s), args.study_name,
                             [o.direction for o in search.objectives], build_sampler(search.sampler, search.space,
                                                                                     args.seed),
                             build_pruner(search.pruner), metrics=[o.metric for o in search.objectives])
    grace = st.GRACE_BEATS * args.heartbeat_s
    while True:
        st.reap(study, grace)
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        failed = sum(t.state == TrialState.FAIL and t.user_attrs.get(st.OUTCOME) == "FAILED" for t in trials)
        if done >= args.budget or failed >= args.budget:
            break
        if sum(st.counts(t, grace) for t in trials) >= args.budget and not any(
                t.state == TrialState.WAITING for t in trials):
            emit("wait", n=sum(t.state == TrialState.RUNNING for t in trials))
            time.sleep(args.poll_s)  # the live trials of others fill the budget, unless one of them fails
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with Study.optimize"
            trial = study.ask()
        if st.over_budget(study.get_trials(deepcopy=False), trial.number, args.budget, grace):
            study._storage.set_trial_user_attr(trial._trial_id, st.OUTCOME, st.DROPPED)
            _tell(study, trial, TrialState.FAIL)
            continue
        run_trial(args, study, trial, emit)


def worker_main(args: WorkerArgs, events) -> None:
    """Entry point of a spawned worker: pin threads, die with the launcher, run `work`."""
    try:
        def emit(kind: str, **data) -> None:
            events.put((args.index, kind, data))

        setup_worker_process(args.index, args.threads, args.launcher_pid, log=lambda text: emit("log", text=text))
        work(args, emit)
    except KeyboardInterrupt:
        events.put((args.index, "exit", {"code": 130}))
        raise SystemExit(130) from None
    events.put((args.index, "exit", {"code": 0}))


__all__ = ["WorkerArgs", "PruneHooks", "run_trial", "work", "worker_main"]
