"""The steps an operation declares (``@operation(steps=...)``) are the stage messages it really reports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import epm.operations  # noqa: F401  (registers the operations)
from epm.jobs.registry import all_operations

SOURCES = Path(__file__).parents[1] / "epm" / "operations"


@pytest.mark.parametrize("operation", [op for op in all_operations() if op.steps], ids=lambda op: op.name)
def test_every_declared_step_is_a_stage_the_operation_reports(operation):
    reported = set()
    for path in SOURCES.glob("*.py"):
        reported |= set(re.findall(r'\(\s*\d+,\s*"([^"]+)"', path.read_text()))
    missing = [step for step in operation.steps if step not in reported]
    assert not missing, f"{operation.name} declares steps it never reports: {missing}"
    assert len(set(operation.steps)) == len(operation.steps)
