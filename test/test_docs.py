"""The docs name tests as evidence for what they claim: every test they name exists."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def defined_tests() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "test").glob("test_*.py"):
        names.update(re.findall(r"^def (test_\w+)", path.read_text(), flags=re.MULTILINE))
    return names


def test_every_test_the_safety_doc_names_exists() -> None:
    named = set(re.findall(r"`(test_\w+)`", (ROOT / "docs" / "safety.md").read_text()))
    assert len(named) >= 15
    assert named - defined_tests() == set()


def test_the_readme_points_to_the_safety_doc() -> None:
    assert "[docs/safety.md](docs/safety.md)" in (ROOT / "README.md").read_text()


def test_the_readme_flood_figures_are_the_result_files() -> None:
    readme = (ROOT / "README.md").read_text()
    flood = json.loads((ROOT / "benchmarks" / "results" / "flood.json").read_text())["phases"]["flood"]
    assert f"published {flood['commands_per_s']} commands/s" in readme
    assert f"{flood['longest_gap_ms']} ms (`.venv/bin/python benchmarks/bench_flood.py" in readme
    previous = [run["phases"]["flood"] for run in
                json.loads((ROOT / "benchmarks" / "results" / "flood_previous_node.json").read_text())["runs"]]
    rates = sorted(phase["commands_per_s"] for phase in previous)
    assert f"published {rates[0]}-{rates[-1]} commands/s" in readme
    assert f"gaps up to {max(phase['longest_gap_ms'] for phase in previous)} ms" in readme
