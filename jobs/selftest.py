"""A diagnostic job: proves workers, progress, retries, cancel and memory limits work end to end.

Operators run it from the Operations page; tests and benchmarks use it as the
trivial job. Parameters (all optional): ``seconds`` to spend (in steps, reporting
progress), ``fail_attempts`` to fail that many first attempts with a transient
error, ``allocate_mb`` to allocate (to see the memory cap refuse it), ``busy_seconds``
to spend without any progress or cancel check, ``marker``
to write a row count into the result (used to prove "exactly once").
"""

from __future__ import annotations

import time

from jobs.errors import TransientError
from jobs.runtime import JobContext, job_entry

STEP_SECONDS = 0.1


@job_entry
def run_selftest(ctx: JobContext) -> dict:
    """Sleep in steps with progress, optionally fail or allocate, and report what happened."""
    params = ctx.params
    fail_attempts = int(params.get("fail_attempts", 0))
    if ctx.attempt <= fail_attempts:
        raise TransientError(f"self-test failing on purpose (attempt {ctx.attempt} of {fail_attempts} planned)")
    allocate_mb = int(params.get("allocate_mb", 0))
    if allocate_mb:
        block = bytearray(allocate_mb * 1024 * 1024)
        block[-1] = 1
        del block
    busy_seconds = float(params.get("busy_seconds", 0))
    if busy_seconds:
        # Work that never checks in: only a hard stop can end it early.
        time.sleep(busy_seconds)
    seconds = float(params.get("seconds", 0))
    # With no time to spend there is nothing to report: the trivial job touches no database
    # from its work process, which is what the engine benchmark measures.
    steps = max(1, int(seconds / STEP_SECONDS)) if seconds else 0
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        ctx.progress(step, steps, "Working")
    return {"summary": f"Self-test passed on attempt {ctx.attempt}", "attempt": ctx.attempt, "steps": steps,
            "marker": params.get("marker")}
