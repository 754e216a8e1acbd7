"""Render the chart with the default values and each ci/*-values.yaml into examples/.

    python helm/render_examples.py          # rewrite helm/otel-rl/examples/*.yaml
    python helm/render_examples.py --check  # exit 1 when a committed example is stale (CI)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent / "otel-rl"
RELEASE, NAMESPACE = "rl", "observability"


def value_sets() -> dict[str, dict]:
    sets = {"default": {}}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        sets[path.name.removesuffix("-values.yaml")] = yaml.safe_load(path.read_text()) or {}
    return sets


def _render(values: dict) -> dict[str, str]:
    import helm_python

    with helm_python.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: dict) -> str:
    """The manifests, as `helm template` prints them (NOTES.txt is not a manifest)."""
    parts = [f"# Source: {path}\n{text.strip()}\n" for path, text in sorted(_render(values).items())
             if text.strip() and not path.endswith("NOTES.txt")]
    return "---\n".join(parts)


def notes(values: dict) -> str:
    """What `helm install` prints after installing (templates/NOTES.txt)."""
    return next((text for path, text in _render(values).items() if path.endswith("NOTES.txt")), "")


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for name, values in value_sets().items():
        path = CHART / "examples" / f"{name}.yaml"
        text = render(values)
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale rendered examples: {', '.join(stale)}; run python helm/render_examples.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
