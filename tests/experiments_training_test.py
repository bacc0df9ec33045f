"""Tests of the training driver (experiments/training.py) and its entry points.

The runs go through `python -m experiments.train_clmvs` in subprocesses (as a
user would start them) on a tiny configuration: 32x64 synthetic benchmark,
2 views, 8 hypotheses per stage, regular branch only, 4 steps in periods of 2
(the synthetic benchmark at 32x64 is rendered once into
~/.cache/keras_mvs).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import training

REPO = pathlib.Path(__file__).resolve().parents[1]
CLMVS_CONFIG = str(REPO / "experiments" / "configs" / "clmvs.py")
UNIMVS_CONFIG = str(REPO / "experiments" / "configs" / "unimvs.py")


def _config(argv, default=CLMVS_CONFIG):
    args, overrides = training.parse_args(argv, "test", default)
    return training.resolve_config(args, overrides)


# === Config overrides (no training) ===


class TestConfigOverrides:

    def test_types_are_parsed_like_the_field(self):
        config = _config([
            "--smoke", "--config.train.steps=7",
            "--config.optimizer.learning_rate=1e30",
            "--config.train.xla=true", "--config.loss.reference_quirks=0",
            "--config.model.num_depths=32,16,8",
            "--config.loss.branches=(regular,scc)",
            "--config.train.precision=mixed_bfloat16",
        ])
        assert config.train.steps == 7 and type(config.train.steps) is int
        assert config.optimizer.learning_rate == 1e30
        assert type(config.optimizer.learning_rate) is float
        assert config.train.xla is True
        assert config.loss.reference_quirks is False
        assert config.model.num_depths == (32, 16, 8)
        assert config.loss.branches == ("regular", "scc")
        assert config.train.precision == "mixed_bfloat16"

    def test_smoke_and_flags(self):
        config = _config(["--smoke", "--objective", "unsupervised_unity",
                          "--data", "/some/where"])
        assert config.train.steps == 16
        assert (config.data.height, config.data.width) == (64, 96)
        assert config.loss.objective == "unsupervised_unity"
        # The objective is defined on the unity head.
        assert config.model.head == "unity"
        assert config.data.spec == "/some/where"
        full = _config([], default=UNIMVS_CONFIG)
        assert full.train.steps == 4000
        assert full.loss.objective == "supervised"

    def test_steps_per_epoch_follows_steps_and_stays_positive(self):
        # steps_per_epoch is a reference to steps // 16.
        assert _config(["--config.train.steps=320"]).train.steps_per_epoch \
            == 20
        config = _config(["--smoke", "--config.train.steps=4"])
        assert training.steps_per_epoch(config) == 1

    @pytest.mark.parametrize("argument, words", [
        ("--config.train.stepz=3", ["stepz", "no such field", "steps"]),
        ("--config.nosection.steps=3", ["nosection", "no section"]),
        ("--config.train.steps.deeper=3", ["steps.deeper"]),
    ])
    def test_unknown_keys_fail_with_a_message(self, argument, words):
        with pytest.raises(KeyError) as info:
            _config(["--smoke", argument])
        for word in words:
            assert word in str(info.value)

    @pytest.mark.parametrize("argument, kind", [
        ("--config.train.steps=abc", "int"),
        ("--config.train.steps=1.5", "int"),
        ("--config.optimizer.learning_rate=fast", "float"),
        ("--config.train.xla=maybe", "bool"),
    ])
    def test_badly_typed_values_fail_with_a_message(self, argument, kind):
        with pytest.raises(ValueError, match=f"expected a value of type {kind}"):
            _config(["--smoke", argument])

    def test_other_arguments_are_refused(self, capsys):
        with pytest.raises(SystemExit):
            _config(["--smoke", "--steps=3"])
        assert "overrides look like" in capsys.readouterr().err
