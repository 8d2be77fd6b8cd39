"""Run identity: a key over what can change a result, unchanged by upgrades that keep behaviour."""
from __future__ import annotations

import dataclasses
import json

import pytest

from detector.config import AssignConfig, ConfigError, TrainConfig, build_config
from detector.run_key import KEY_VERSION, key_payload, run_key
from tests.conftest import tiny_config

# The key of tiny_config(), pinned: if this changes, every finished run in every workspace turns back
# into "pending". Change it only together with KEY_VERSION, on purpose.
GOLDEN = ("4aa66a54ba3c7fb7", 3)


def test_golden_key_of_a_fixed_config():
    assert (run_key(tiny_config()), KEY_VERSION) == GOLDEN


def _with_new_field(section_cls, name: str, tp, default):
    """`section_cls` with one more field (as an upgrade that adds a knob would make it)."""
    return dataclasses.make_dataclass(section_cls.__name__, [(name, tp, dataclasses.field(default=default))],
                                      bases=(section_cls,))


def test_a_new_field_with_its_default_leaves_keys_unchanged():
    cfg = tiny_config(assign={"name": "atss"})
    newer = _with_new_field(TrainConfig, "new_knob", float, 0.5)
    upgraded = dataclasses.replace(cfg, train=newer(**dataclasses.asdict(cfg.train)))
    assert run_key(upgraded) == run_key(cfg)
    upgraded.train.new_knob = 0.7  # setting it does change what runs
    assert run_key(upgraded) != run_key(cfg)


def test_a_new_method_section_leaves_keys_unchanged():
    @dataclasses.dataclass
    class FancyConfig:
        k: int = 3

    cfg = tiny_config()
    newer = _with_new_field(AssignConfig, "fancy", FancyConfig, None)
    fields = {f.name: getattr(cfg.assign, f.name) for f in dataclasses.fields(cfg.assign)}
    upgraded = dataclasses.replace(cfg, assign=newer(**fields, fancy=FancyConfig()))
    assert run_key(upgraded) == run_key(cfg)
    upgraded.assign.fancy.k = 4  # an inactive method's knob is not part of this run
    assert run_key(upgraded) == run_key(cfg)


def test_what_enters_the_key():
    base = tiny_config(assign={"name": "atss"})
    same = {
        "name": tiny_config(name="other", assign={"name": "atss"}),
        "threads": tiny_config(assign={"name": "atss"}, train={"num_threads": 2}),
        "cadence": tiny_config(assign={"name": "atss"}, train={"log_every": 5, "checkpoint_every": 7,
                                                               "record_every": 0, "eval_every": 2}),
        "device": tiny_config(assign={"name": "atss"}, train={"device": "cpu"}),
        "inactive method": tiny_config(assign={"name": "atss", "paa": {"topk": 5}}),
    }
    for what, cfg in same.items():
        assert run_key(cfg) == run_key(base), what
    different = {
        "seed": tiny_config(assign={"name": "atss"}, train={"seed": 1}),
        "active method knob": tiny_config(assign={"name": "atss", "atss": {"topk": 5}}),
        "method": tiny_config(assign={"name": "max_iou"}),
        "schedule": tiny_config(assign={"name": "atss"}, train={"iterations": 4}),
        "data": tiny_config(assign={"name": "atss"}, data={"synth": {"seed": 4}}),
    }
    keys = {what: run_key(cfg) for what, cfg in different.items()}
    assert run_key(base) not in keys.values() and len(set(keys.values())) == len(keys)
    payload = key_payload(base)
    assert payload["seed"] == 0 and payload["version"] == KEY_VERSION
    assert "train.seed" not in payload["fields"] and "name" not in payload["fields"]


def test_coco_data_is_keyed_by_content_not_place(tmp_path):
    def coco_config(folder):
        folder.mkdir()
        for split in ("train", "val"):
            (folder / f"{split}.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
        return build_config({"data": {"dataset": "coco", "train_images": str(folder / "i"),
                                      "train_json": str(folder / "train.json"), "val_images": str(folder / "i"),
                                      "val_json": str(folder / "val.json")}})

    a, b = coco_config(tmp_path / "a"), coco_config(tmp_path / "b")
    assert run_key(a) == run_key(b)  # same annotations in another folder
    (tmp_path / "b" / "val.json").write_text(json.dumps({"images": [{"id": 1}], "annotations": [], "categories": []}))
    assert run_key(a) != run_key(b)
    (tmp_path / "b" / "val.json").unlink()
    with pytest.raises(ConfigError, match="annotation file not found"):
        run_key(b)
