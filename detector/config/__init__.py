"""Typed run configuration: dataclasses with the papers' defaults, one strict validator.

A run is fully described by a `Config`. The package is split by concept:
  sections.py  the shared sections (data, model, loss, train, inference), importing nothing from `detector`;
  assign_sections.py  each method's section (`assign.<name>`);
  method_specs.py     `METHOD_SPECS`: per method, its section type, box coding and score fusion;
  schema.py    `AssignConfig` (one section per method of `METHOD_SPECS`) and the whole `Config`;
  io.py        YAML and `--set a.b=c` overrides, the validator (`build_config`), dumping.
(A run's identity, the key over its config, is `detector.run_key`.)
Everything public is importable from `detector.config`. Nothing here imports torch (tested): a study validates
and keys all its runs without loading a model, so `anchorlab study status` / `study table` answer in a second.
"""
from __future__ import annotations

from detector.config.assign_sections import (ATSSConfig, CenternessThresholdConfig, FCOSConfig, FreeAnchorConfig,
                                             MaxIoUConfig, PAAConfig, PseudoIoUConfig, ScaledBoxConfig)
from detector.config.io import (CHOICES, ConfigError, YamlLoader, build_config, check_delta, config_to_dict,
                                deep_merge, dump_yaml, flatten, load_config, load_yaml, parse_override)
from detector.config.schema import AssignConfig, Config
from detector.config.sections import (AnchorConfig, BackboneConfig, BoxCoderConfig, DataConfig, EvalConfig,
                                      HeadConfig, InferenceConfig, LossConfig, ModelConfig, SynthConfig,
                                      TrainConfig, VocConfig, VotingConfig)

__all__ = [
    "Config", "ConfigError", "SynthConfig", "DataConfig", "BackboneConfig", "AnchorConfig", "HeadConfig",
    "BoxCoderConfig", "ModelConfig", "AssignConfig", "MaxIoUConfig", "ATSSConfig", "PAAConfig", "FCOSConfig",
    "PseudoIoUConfig", "ScaledBoxConfig", "CenternessThresholdConfig", "FreeAnchorConfig", "LossConfig",
    "TrainConfig", "VotingConfig", "InferenceConfig", "VocConfig", "EvalConfig", "CHOICES", "YamlLoader",
    "build_config", "check_delta", "load_config", "load_yaml", "parse_override", "deep_merge", "config_to_dict",
    "flatten", "dump_yaml",
]
