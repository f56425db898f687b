"""``demo_countdown``: a job that does nothing but count, to see the job system work.

It is what a newcomer starts to watch a job run (``POST /api/background-jobs``) and what the job
system's tests and benchmarks drive. It is offered only when ``EPM_DEMO=1`` (``make run``, the tests,
the benchmarks): in production it would let any user spend the server's CPU. Parameters (all optional):

- ``steps`` (1-1000, default 10): how many steps to report;
- ``step_seconds`` (0-30): pacing of each step, instead of ``EPM_STAGE_SECONDS``;
- ``fail_at`` (a step number): fail there with a message for the user;
- ``crash_at`` (a step number): raise an unexpected error there (the user sees a safe message);
- ``cpu_ms`` (0-5000): burn this much CPU per step off the event loop, like a heavy computation;
- ``label`` (text, up to 200 characters): shown in each step's message ("Step 2 of 5 — <label>").

A whole job is bounded too: at most ``MAX_CPU_SECONDS`` of CPU and ``MAX_WALL_SECONDS`` of pacing.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask

from ..errors import ValidationFailed
from ..jobs import JobContext, OperationError, operation
from ..jobs.registry import unregister

MAX_STEPS = 1000
MAX_CPU_SECONDS = 30
MAX_WALL_SECONDS = 3600


def _number(params: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = params.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValidationFailed(f"{name} must be a number from {low:g} to {high:g}.", {name: "out of range"})
    return value


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """Check the demo's parameters before a job is created."""
    clean = {"steps": int(_number(params, "steps", 10, 1, MAX_STEPS))}
    if "step_seconds" in params:
        clean["step_seconds"] = _number(params, "step_seconds", 0, 0, 30)
    for name in ("fail_at", "crash_at"):
        if params.get(name) is not None:
            clean[name] = int(_number(params, name, 0, 1, MAX_STEPS))
    label = params.get("label")
    if label is not None:
        if not isinstance(label, str) or len(label) > 200:
            raise ValidationFailed("label must be text of at most 200 characters.", {"label": "too long or not text"})
        clean["label"] = label
    if params.get("cpu_ms"):
        clean["cpu_ms"] = _number(params, "cpu_ms", 0, 0, 5000)
    if clean["steps"] * clean.get("cpu_ms", 0) > MAX_CPU_SECONDS * 1000:
        raise ValidationFailed(f"steps × cpu_ms may be at most {MAX_CPU_SECONDS * 1000} (ms of CPU per job).",
                               {"cpu_ms": "too much CPU for one job"})
    if clean["steps"] * (clean.get("step_seconds") or 0) > MAX_WALL_SECONDS:
        raise ValidationFailed(f"steps × step_seconds may be at most {MAX_WALL_SECONDS} (seconds per job).",
                               {"step_seconds": "too long for one job"})
    unknown = sorted(set(params) - {"steps", "step_seconds", "fail_at", "crash_at", "label", "cpu_ms"})
    if unknown:
        raise ValidationFailed(f"Unknown parameter {unknown[0]!r}.", {name: "is not a parameter" for name in unknown})
    return clean


def burn_cpu(milliseconds: float) -> int:
    """Spin the CPU for ``milliseconds`` of wall time; returns the iterations done."""
    end = time.perf_counter() + milliseconds / 1000
    count = 0
    while time.perf_counter() < end:
        count += 1
    return count


def init_app(app: Flask) -> None:
    """Offer ``demo_countdown`` only when ``EPM_DEMO`` is on; withdraw it otherwise."""
    if app.config.get("EPM_DEMO"):
        operation("demo_countdown", title="Demo countdown", ready="Countdown finished", view_label="View job",
                  requires_session=False, validate=validate, resumable=True)(countdown)
    else:
        unregister("demo_countdown")


def countdown(ctx: JobContext) -> dict[str, Any]:
    """Counts through a number of steps, reporting progress at each."""
    params = ctx.params
    steps = params["steps"]
    # A resumed attempt goes on from the last step an earlier one began.
    for step in range(ctx.checkpoint_value("step", 1), steps + 1):
        if params.get("fail_at") == step:
            raise OperationError(f"The countdown was told to fail at step {step}.", code="demo_failure")
        if params.get("crash_at") == step:
            raise RuntimeError(f"demo crash at step {step}")
        ctx.checkpoint("step", step)
        label = f" — {params['label']}" if params.get("label") else ""
        ctx.stage(100 * (step - 1) / steps, f"Step {step} of {steps}{label}", params.get("step_seconds"))
        if params.get("cpu_ms"):
            ctx.run_blocking(burn_cpu, params["cpu_ms"])
    return {"summary": f"Counted {steps} step{'' if steps == 1 else 's'}", "url": f"/jobs/{ctx.job_id}", "steps": steps}
