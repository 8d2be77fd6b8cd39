"""Typed run configuration: dataclasses with the papers' defaults, one strict validator.

A run is fully described by a `Config`. The package is split by concept:
  sections.py  the shared sections (data, model, loss, train, inference), importing nothing from `detector`;
  schema.py    `AssignConfig` (one section per method of `detector.methods.METHODS`, defined beside the
               method's code) and the whole `Config`;
  io.py        YAML and `--set a.b=c` overrides, the validator (`build_config`), dumping.
(A run's identity, the key over its config, is `detector.run_key`.)
Everything public is importable from `detector.config`.
"""
from __future__ import annotations

from detector.assigners.atss import ATSSConfig
from detector.assigners.centerness_threshold import CenternessThresholdConfig
from detector.assigners.fcos import FCOSConfig
from detector.assigners.max_iou import MaxIoUConfig
from detector.assigners.paa_config import PAAConfig
from detector.assigners.pseudo_iou import PseudoIoUConfig
from detector.assigners.scaled_box import ScaledBoxConfig
from detector.config.io import (CHOICES, ConfigError, YamlLoader, build_config, check_delta, config_to_dict,
                                deep_merge, dump_yaml, flatten, load_config, load_yaml, parse_override)
from detector.config.schema import AssignConfig, Config
from detector.config.sections import (AnchorConfig, BackboneConfig, BoxCoderConfig, DataConfig, EvalConfig,
                                      HeadConfig, InferenceConfig, LossConfig, ModelConfig, SynthConfig,
                                      TrainConfig, VocConfig, VotingConfig)

__all__ = [
    "Config", "ConfigError", "SynthConfig", "DataConfig", "BackboneConfig", "AnchorConfig", "HeadConfig",
    "BoxCoderConfig", "ModelConfig", "AssignConfig", "MaxIoUConfig", "ATSSConfig", "PAAConfig", "FCOSConfig",
    "PseudoIoUConfig", "ScaledBoxConfig", "CenternessThresholdConfig", "LossConfig",
    "TrainConfig", "VotingConfig", "InferenceConfig", "VocConfig", "EvalConfig", "CHOICES", "YamlLoader",
    "build_config", "check_delta", "load_config", "load_yaml", "parse_override", "deep_merge", "config_to_dict",
    "flatten", "dump_yaml",
]
