"""The schedule clock: a thread in every worker's main process that fires due schedule slots.

It sleeps until the earliest next_run_at (at most MAX_SLEEP seconds, so a schedule
created or changed meanwhile is seen soon), then fires under a PostgreSQL advisory
lock: every worker runs a clock, one fires at a time, and the unique (schedule, slot)
row makes a second firing of a slot impossible anyway. No extra process to deploy.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask

from webapp import schedule_firing

log = logging.getLogger("backhaul.schedules")

MAX_SLEEP = 5.0
# When another process holds the firing lock (it may be about to stop), or something could not be
# fired yet, look again this soon.
LOCKED_OUT_SLEEP = 1.0


class ScheduleClockThread(threading.Thread):
    """Fires due schedule slots until stopped; errors are logged, never fatal."""

    def __init__(self, app: Flask) -> None:
        super().__init__(name="schedule-clock", daemon=True)
        self.app = app
        self.stopped = threading.Event()

    def run(self) -> None:
        """Sleep until something is due, fire it, repeat."""
        delay = 0.0
        system_ensured = False
        while not self.stopped.wait(delay):
            try:
                with self.app.app_context():
                    if not system_ensured:
                        system_ensured = schedule_firing.fire_due_if_leader(ensure_system=True) is not None
                    delay = self.tick()
            except Exception:  # noqa: BLE001 - PostgreSQL away: try again shortly
                log.warning("schedule clock pass failed", exc_info=True)
                delay = MAX_SLEEP

    def tick(self) -> float:
        """Fire what is due now; return how long to sleep before the next look."""
        until = schedule_firing.seconds_until_due()
        if until is not None and until <= 0:
            if schedule_firing.fire_due_if_leader() is None:
                return LOCKED_OUT_SLEEP
            until = schedule_firing.seconds_until_due()
            if until is not None and until <= 0:
                # Still due: a row held by someone editing it, or more than one pass's worth.
                return LOCKED_OUT_SLEEP
        if until is None:
            return MAX_SLEEP
        return min(MAX_SLEEP, max(0.0, until))
