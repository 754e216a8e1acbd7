"""The shared name-mapping module, tested alone."""

from __future__ import annotations

import pytest

from otel_rl.model.naming import RULES, NameMapper, series_key


def test_series_key_joins_attributes_and_suffix():
    assert series_key("loss") == "loss"
    assert series_key("reward", (("env", "a"), ("rank", "0")), "mean") == "reward/env:a/rank:0/mean"


def test_tensorboard_keeps_names():
    assert NameMapper("tensorboard").key("train/loss [x]") == "train/loss [x]"


def test_mlflow_illegal_characters_paths_and_length():
    m = NameMapper("mlflow")
    assert m.key("train/loss(x)") == "train/loss_x_"
    assert m.key("a//b/../c") == "a/b/__/c"
    long = m.key("x" * 400)
    assert len(long) == 250 and long.startswith("x" * 200)
    assert m.key("x" * 400) == long  # stable
    import re

    assert all(re.fullmatch(r"[/\w.\- :]*", k) for k in (long, m.key("a{b=c}")))


def test_collision_is_disambiguated_and_reported_once(caplog):
    m = NameMapper("mlflow")
    first = m.key("loss(a)")
    second = m.key("loss[a]")
    assert first == "loss_a_" and second != first and second.startswith("loss_a__h")
    assert m.key("loss[a]") == second
    assert m.collisions == 1
    assert sum("both map to" in r.getMessage() for r in caplog.records) == 1


def test_unknown_backend_lists_known():
    with pytest.raises(ValueError, match="known: "):
        NameMapper("nope")
    assert {"tensorboard", "mlflow", "wandb", "swanlab"} <= set(RULES)
