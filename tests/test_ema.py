"""EMA of the weights (`train.ema_decay`): the warm-up rule against a hand computation, evaluations and
checkpoints of the EMA in real tiny trainings, resume, config validation and run keys."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from torch import nn

from detector.config import ConfigError, TrainConfig
from detector.engine.checkpoint import LAST, load_checkpoint
from detector.engine.ema import ModelEma, ema_model_state, warmup_decay
from detector.engine.evaluate import evaluate_metrics, predict
from detector.engine.hooks import TrainHooks
from detector.engine.predictor import load_detector
from detector.engine.train import train
from detector.model.detector import DenseDetector
from detector.run_key import key_payload, run_key
from tests.conftest import data_workspace, tiny_config
from tests.test_run_key import GOLDEN


def _small_bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))


def test_warmup_ema_matches_a_hand_computation_buffers_included(one_thread):
    torch.manual_seed(0)
    model = _small_bn_net()
    decay, k = 0.5, 12  # the warm-up (1 + n) / (10 + n) rules updates 1-7 (n = 8: 9/18), `decay` 8-12
    assert [warmup_decay(decay, n) < decay for n in range(1, k + 1)] == [True] * 7 + [False] * 5
    ema = ModelEma(model, decay)
    ref = {name: v.double().clone() for name, v in model.state_dict().items() if v.is_floating_point()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    model.train()
    for n in range(1, k + 1):
        loss = model(torch.randn(8, 3, 6, 6)).square().mean()  # train mode: BN running stats move too
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
        d = warmup_decay(decay, n)
        assert d == min(decay, (1 + n) / (10 + n))
        for name, v in model.state_dict().items():
            if name in ref:
                ref[name] = d * ref[name] + (1 - d) * v.double()

    assert ema.updates == k and int(ema.averaged.n_averaged) == k + 1
    got, now = ema.module.state_dict(), model.state_dict()
    assert set(got) == set(now)
    for name, v in ref.items():
        assert torch.allclose(got[name].double(), v, atol=1e-6, rtol=1e-6), name
        assert not torch.allclose(got[name], now[name]), name  # really an average, not the model
    assert {"1.running_mean", "1.running_var"} <= set(ref)  # BatchNorm statistics are averaged too
    assert int(got["1.num_batches_tracked"]) == int(now["1.num_batches_tracked"]) == k  # counters copied
    assert not any(p.requires_grad for p in ema.module.parameters())
    # a saved state round-trips into a fresh EMA, and into a plain model
    again = ModelEma(model, decay)
    again.load_state_dict(ema.state_dict())
    assert again.updates == k
    plain = _small_bn_net()
    plain.load_state_dict(ema_model_state(ema.state_dict()))
    for name, v in plain.state_dict().items():
        assert torch.equal(v, got[name]), name


def test_the_ema_keeps_a_channels_last_model_channels_last():
    cfg = tiny_config(model={"channels_last": True})
    model = DenseDetector(cfg.model, 3)
    ema = ModelEma(model, 0.9)
    ema.load_state_dict(ema.state_dict())
    w = ema.module.backbone.stem[0][0].weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    assert ema.module.cfg.channels_last


class _Recorder(TrainHooks):
    """Keeps the start iteration, the evaluations, and a copy of every checkpoint as it is written."""

    def __init__(self, folder, crash_at: int = 0):
        self.folder, self.crash_at = folder, crash_at
        self.start, self.evals, self.checkpoints = None, {}, {}
        folder.mkdir(parents=True, exist_ok=True)

    def on_start(self, config, workdir, start_iteration):
        self.start = start_iteration

    def on_iteration(self, iteration, scalars):
        if iteration == self.crash_at and "loss" in scalars:
            raise KeyboardInterrupt  # after the checkpoint of the iteration before

    def on_checkpoint(self, iteration, path):
        self.checkpoints[iteration] = shutil.copy(path, self.folder / f"{iteration}.pt")

    def on_eval(self, iteration, metrics, files):
        self.evals[iteration] = (metrics, files)


# score_thresh 0: a 4-iteration model keeps detections (its scores sit near the 0.01 prior), so two weight
# sets give different detections and metrics
EMA_RUN = {"inference": {"score_thresh": 0.0},
           "train": {"iterations": 4, "checkpoint_every": 2, "eval_every": 2, "ema_decay": 0.9}}


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, synth_data):
    """One uninterrupted tiny training with EMA (4 iterations, checkpoint and evaluation at 2)."""
    ws = data_workspace(tmp_path_factory.mktemp("ema_ws"), synth_data)
    cfg = tiny_config(**EMA_RUN)
    hooks = _Recorder(ws / "copies")
    before = torch.get_num_threads()
    result = train(cfg, ws, hooks, workdir=ws / "run")
    torch.set_num_threads(before)
    assert result.status == "FINISHED", result.reason
    return cfg, ws, result, hooks


def _assert_states_close(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


def test_evaluations_are_of_the_ema_weights(ema_run, one_thread):
    cfg, ws, result, hooks = ema_run
    state = load_checkpoint(result.checkpoint)
    assert state["iteration"] == 4 and int(state["ema"]["n_averaged"]) == 5  # the first copy + 4 updates
    ema_state = ema_model_state(state["ema"])
    assert set(ema_state) == set(state["model"])
    assert any(not torch.allclose(ema_state[k], v) for k, v in state["model"].items() if v.is_floating_point())

    # the final metrics and detections are those of the checkpoint's EMA weights (what `anchorlab eval` loads) ...
    ema_model, val_set, device = load_detector(cfg, result.checkpoint, ws)
    dets, _ = predict(ema_model, val_set, cfg, device)
    assert dets and dets == json.loads(result.files["detections"].read_text())
    assert evaluate_metrics(ema_model, val_set, cfg, device) == result.metrics == hooks.evals[4][0]
    # ... and not those of the raw training weights
    raw_model, _, _ = load_detector(cfg, result.checkpoint, ws, ema=False)
    assert predict(raw_model, val_set, cfg, device)[0] != dets

    # the evaluation during training (iteration 2) is of the EMA too
    mid = load_checkpoint(hooks.checkpoints[2])
    assert mid["iteration"] == 2 and int(mid["ema"]["n_averaged"]) == 3
    mid_model, _, _ = load_detector(cfg, hooks.checkpoints[2], ws)
    assert evaluate_metrics(mid_model, val_set, cfg, device) == hooks.evals[2][0]
    mid_raw, _, _ = load_detector(cfg, hooks.checkpoints[2], ws, ema=False)
    assert predict(mid_raw, val_set, cfg, device)[0] != predict(mid_model, val_set, cfg, device)[0]


def test_ema_and_its_evaluations_leave_the_training_unchanged(ema_run, tmp_path, workspace, one_thread):
    """The same config without EMA and without evaluations during training trains to the same raw weights:
    the EMA's evaluations leave the training model in train mode, and the EMA draws no random numbers."""
    cfg, _, result, _ = ema_run
    plain_cfg = tiny_config(inference=EMA_RUN["inference"], train={
        **EMA_RUN["train"], "ema_decay": 0.0, "eval_every": 0, "eval_at_end": False})
    plain = train(plain_cfg, workspace, workdir=tmp_path / "plain")
    state = load_checkpoint(plain.checkpoint)
    assert "ema" not in state
    _assert_states_close(state["model"], load_checkpoint(result.checkpoint)["model"])
    # without EMA in the checkpoint, the predictor loads the raw weights
    model, _, _ = load_detector(plain_cfg, plain.checkpoint, workspace)
    _assert_states_close(model.state_dict(), state["model"])


def test_resume_restores_the_ema(ema_run, tmp_path, one_thread):
    """Interrupted at iteration 3 (after the checkpoint at 2) and resumed: the same raw and EMA weights as
    the uninterrupted run."""
    cfg, ws, straight, _ = ema_run
    workdir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, ws, _Recorder(tmp_path / "c1", crash_at=3), workdir=workdir)
    assert load_checkpoint(workdir / LAST)["iteration"] == 2
    hooks = _Recorder(tmp_path / "c2")
    resumed = train(cfg, ws, hooks, resume=True, workdir=workdir)
    assert resumed.status == "FINISHED" and hooks.start == 2
    a, b = load_checkpoint(resumed.checkpoint), load_checkpoint(straight.checkpoint)
    _assert_states_close(a["model"], b["model"])
    _assert_states_close(a["ema"], b["ema"])
    assert int(a["ema"]["n_averaged"]) == 5
    assert resumed.metrics == straight.metrics


def test_a_checkpoint_without_ema_resumes_with_the_ema_started_at_its_weights(ema_run, tmp_path, one_thread):
    cfg, ws, _, hooks = ema_run
    workdir = tmp_path / "run"
    workdir.mkdir()
    old = load_checkpoint(hooks.checkpoints[2])
    del old["ema"]  # as written before EMA existed
    torch.save(old, workdir / LAST)
    quiet = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, eval_every=0, eval_at_end=False))
    resumed = train(quiet, ws, resume=True, workdir=workdir)
    assert resumed.status == "FINISHED"
    assert int(load_checkpoint(resumed.checkpoint)["ema"]["n_averaged"]) == 3  # the copy at 2, updates 3 and 4


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan")])
def test_ema_decay_out_of_range_is_a_one_line_error(value):
    with pytest.raises(ConfigError, match=r"train\.ema_decay") as e:
        tiny_config(train={"ema_decay": value})
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"train\.ema_decay"):
        tiny_config(train={"ema_decay": "high"})


def test_ema_off_keeps_run_keys_and_on_changes_them():
    cfg = tiny_config()
    assert cfg.train.ema_decay == 0.0
    assert run_key(tiny_config(train={"ema_decay": 0.0})) == run_key(cfg) == GOLDEN[0]
    # a config of a TrainConfig without the field (as before it existed) has the same key
    older = dataclasses.make_dataclass("TrainConfig", [
        (f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory))
        for f in dataclasses.fields(TrainConfig) if f.name != "ema_decay"])
    fields = {f.name: getattr(cfg.train, f.name) for f in dataclasses.fields(older)}
    assert run_key(dataclasses.replace(cfg, train=older(**fields))) == run_key(cfg)
    on = tiny_config(train={"ema_decay": 0.9})
    assert run_key(on) != run_key(cfg) and key_payload(on)["fields"]["train.ema_decay"] == 0.9
    assert "train.ema_decay" not in key_payload(cfg)["fields"]
