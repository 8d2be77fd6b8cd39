"""The whole run configuration: the shared sections plus `AssignConfig`, assembled from `METHOD_SPECS`.

`AssignConfig` has the method's name, one section per method of `detector.config.method_specs.METHOD_SPECS`
that has a config type (section name = method name, e.g. `assign.paa.topk`), and the crowd-ignore threshold
that every method shares. Adding a method with a config adds its section here without an edit.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from detector.config.sections import DataConfig, EvalConfig, InferenceConfig, LossConfig, ModelConfig, TrainConfig
from detector.config.method_specs import METHOD_SPECS

AssignConfig = dataclasses.make_dataclass(
    "AssignConfig",
    [("name", str, field(default="max_iou"))]  # a key of METHOD_SPECS (and of detector.methods.METHODS)
    + [(name, m.config, field(default_factory=m.config)) for name, m in METHOD_SPECS.items() if m.config is not None]
    + [("ignore_iof", float, field(default=0.5))],  # anchors covered more than this by a crowd region are ignored
    namespace={"__module__": __name__,
               "__doc__": "The label-assignment method (`name`), one section per method config, the crowd rule."},
)


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    assign: AssignConfig = field(default_factory=AssignConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
