"""docs/deploy.md's trainer env block works when pasted: expanded the way Kubernetes expands
`$(VAR)` (only variables defined earlier in the list; an undefined reference stays as written),
every reference resolves and all ranks of a Job get one run name."""

from __future__ import annotations

import re

import yaml
from conftest import ROOT


def _env_block() -> list[dict]:
    text = (ROOT / "docs" / "deploy.md").read_text()
    section = text[text.index("## 4. Point the trainers at it"):]
    block = re.search(r"```yaml\n(env:\n.*?)```", section, re.S).group(1)
    return yaml.safe_load(block)["env"]


def expand(env: list[dict], sources: dict[str, str]) -> dict[str, str]:
    """Kubernetes' dependent environment variables: `$(NAME)` expands to an earlier entry's value;
    `$$` escapes; anything else is left as written. ``sources`` give valueFrom results."""
    out: dict[str, str] = {}
    for entry in env:
        if "valueFrom" in entry:
            out[entry["name"]] = sources[entry["name"]]
            continue
        value = str(entry.get("value", ""))

        def ref(m: re.Match) -> str:
            if m.group(0) == "$$":
                return "$"
            return out.get(m.group(1), m.group(0))

        out[entry["name"]] = re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", ref, value)
    return out


def test_trainer_env_expands_in_order_with_nothing_undefined():
    env = _env_block()
    ranks = [expand(env, {"OTEL_RL_TOKEN": "s3cret", "JOB_NAME": "grpo-job-7"}) for _ in range(2)]
    for values in ranks:
        assert not any("$(" in v for v in values.values()), values
        assert values["OTEL_EXPORTER_OTLP_HEADERS"] == "Authorization=Bearer s3cret"
    assert {r["OTEL_RL_RUN_NAME"] for r in ranks} == {"grpo-7b-grpo-job-7"}
    other_job = expand(env, {"OTEL_RL_TOKEN": "s3cret", "JOB_NAME": "grpo-job-8"})
    assert other_job["OTEL_RL_RUN_NAME"] != ranks[0]["OTEL_RL_RUN_NAME"]  # jobs never merge


def test_the_expansion_rule_catches_the_old_order():
    """The block as it was shipped before: the token referenced before it is defined."""
    old = [{"name": "OTEL_EXPORTER_OTLP_HEADERS", "value": "Authorization=Bearer $(OTEL_RL_TOKEN)"},
           {"name": "OTEL_RL_TOKEN", "valueFrom": {}}]
    assert expand(old, {"OTEL_RL_TOKEN": "s3cret"})["OTEL_EXPORTER_OTLP_HEADERS"] == "Authorization=Bearer $(OTEL_RL_TOKEN)"
