"""Time rules of schedules, as pure functions of an injected ``now``: slots, DST, words, periods.

A cron rule is read in the schedule's time zone as wall-clock times (croniter on naive
local times), then each wall-clock time is turned into an instant here, so DST is
decided by our code and documented in docs/schedules.md:
- a wall-clock time that does not exist (spring forward: 02:30 in Europe/Berlin on the
  last Sunday of March) runs at the first instant after the gap (03:00 local);
- a wall-clock time that happens twice (fall back) runs at its first occurrence only.
Slots are compared as UTC instants, so two wall-clock times that land on the same
instant are one slot.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter

# A run fired later than this after its slot is shown as a catch-up.
CATCH_UP_AFTER_SECONDS = 60
# At most this many due slots are looked at one by one; beyond that only the grace window is.
MAX_SCAN = 5000

WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


class RuleError(ValueError):
    """A rule a person wrote that cannot be used; the message says why, for them."""


def zone(name: str) -> ZoneInfo:
    """The time zone called ``name``; RuleError for an unknown one."""
    if not name or name not in _zone_names():
        raise RuleError(f"Unknown time zone {name[:64]!r}: use a name like Europe/Berlin or UTC.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RuleError(f"Unknown time zone {name[:64]!r}: use a name like Europe/Berlin or UTC.") from None


_ZONES: frozenset[str] = frozenset()


def _zone_names() -> frozenset[str]:
    """Every time-zone name tzdata knows (read once)."""
    global _ZONES
    if not _ZONES:
        _ZONES = frozenset(available_timezones())
    return _ZONES


def zone_names() -> list[str]:
    """Sorted time-zone names, for the picker."""
    return sorted(_zone_names())


def check_cron(expr: str) -> str:
    """The expression, normalised; RuleError unless it is a valid five-field cron expression."""
    expr = " ".join((expr or "").split())
    if len(expr.split(" ")) != 5:
        raise RuleError(f"Invalid cron expression {expr[:120]!r}: write five fields, minute hour day month "
                        "weekday (e.g. '0 7 * * 1' for Mondays at 07:00).")
    if not croniter.is_valid(expr):
        raise RuleError(f"Invalid cron expression {expr[:120]!r}: each field must be a number, range, list or "
                        "step in its range (minute 0-59, hour 0-23, day 1-31, month 1-12, weekday 0-6).")
    return expr


def to_instant(local: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of the naive wall-clock time ``local`` in ``tz`` (see the module docstring for DST)."""
    first = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == local:
        return first  # exists; when it happens twice, fold=0 is its first occurrence
    # In a gap: the two readings of the time straddle the transition; find it to the second.
    lo, hi = sorted((first, local.replace(tzinfo=tz, fold=1).astimezone(UTC)))
    after = hi.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0)


def next_slot(cron: str, tz_name: str, after: datetime) -> datetime:
    """The first slot of ``cron`` in ``tz_name`` strictly after the instant ``after`` (UTC)."""
    tz = zone(tz_name)
    start = after.astimezone(tz).replace(tzinfo=None)
    # An hour earlier: a time in the repeated hour of fall-back may still map after ``after``.
    times = croniter(cron, start - timedelta(hours=1))
    while True:
        slot = to_instant(times.get_next(datetime), tz)
        if slot > after:
            return slot


@dataclass
class Plan:
    """What to do with the due slots of one schedule at ``now``."""

    run: datetime | None = None
    catch_up: bool = False
    missed: list[datetime] = field(default_factory=list)
    missed_total: int = 0
    next_run_at: datetime | None = None


def plan_due(cron: str | None, tz_name: str, first_due: datetime, now: datetime, grace_seconds: int) -> Plan:
    """Decide which due slot runs (the latest within the grace window), which are missed, and the next slot.

    Several due slots (everything was down) give one run, marked catch-up; slots older
    than the grace window are missed, never run. A one-shot (``cron`` None) has one slot.
    """
    grace = timedelta(seconds=grace_seconds)
    due: list[datetime] = []
    slot: datetime | None = first_due
    uncounted = 0
    while slot is not None and slot <= now:
        if len(due) >= MAX_SCAN and cron:
            # A very long outage of a frequent schedule: only the grace window can still run.
            uncounted = 1
            due = [s for s in due if now - s <= grace]
            slot = next_slot(cron, tz_name, max(slot, now - grace) - timedelta(microseconds=1))
            while slot <= now:
                due.append(slot)
                slot = next_slot(cron, tz_name, slot)
            break
        due.append(slot)
        slot = next_slot(cron, tz_name, slot) if cron else None
    plan = Plan(next_run_at=slot)
    in_grace = [s for s in due if now - s <= grace]
    if in_grace:
        plan.run = in_grace[-1]
        plan.catch_up = len(due) > 1 or (now - plan.run).total_seconds() > CATCH_UP_AFTER_SECONDS
    plan.missed = [s for s in due if s != plan.run]
    plan.missed_total = len(plan.missed) + (MAX_SCAN if uncounted else 0)
    return plan


# --- rules in words and the simple picker ------------------------------------------------------


@dataclass
class Picked:
    """A rule as the simple picker shows it."""

    frequency: str  # daily | weekly | monthly | cron
    time: str = "07:00"
    weekdays: list[int] = field(default_factory=list)  # cron numbering: 0 = Sunday
    day: int = 1


def compose(picked: Picked) -> str:
    """The cron expression for a picked rule; RuleError when it is incomplete."""
    if picked.frequency == "cron":
        raise RuleError("A cron rule is written, not picked.")
    try:
        hour, minute = (int(p) for p in picked.time.split(":"))
        if not (0 <= hour <= 23 and 0 <= minute <= 59):
            raise ValueError
    except ValueError:
        raise RuleError(f"Invalid time {picked.time[:20]!r}: use HH:MM, e.g. 07:00.") from None
    if picked.frequency == "daily":
        return f"{minute} {hour} * * *"
    if picked.frequency == "weekly":
        if not picked.weekdays:
            raise RuleError("Choose at least one weekday.")
        return f"{minute} {hour} * * {','.join(str(d) for d in sorted(set(picked.weekdays)))}"
    if picked.frequency == "monthly":
        if not 1 <= picked.day <= 31:
            raise RuleError("Choose a day of the month from 1 to 31.")
        return f"{minute} {hour} {picked.day} * *"
    raise RuleError(f"Unknown frequency {picked.frequency[:20]!r}.")


def pick(cron: str) -> Picked:
    """The picker's view of ``cron``: daily/weekly/monthly when it is one of those shapes, else "cron"."""
    fields = cron.split()
    if len(fields) != 5:
        return Picked("cron")
    minute, hour, day, month, weekday = fields
    if not (minute.isdigit() and hour.isdigit()) or month != "*":
        return Picked("cron")
    time = f"{int(hour):02d}:{int(minute):02d}"
    if day == "*" and weekday == "*":
        return Picked("daily", time)
    if day == "*" and all(p.isdigit() and int(p) <= 7 for p in weekday.split(",")):
        return Picked("weekly", time, sorted({int(p) % 7 for p in weekday.split(",")}))
    if day.isdigit() and weekday == "*":
        return Picked("monthly", time, day=int(day))
    return Picked("cron")


def cadence(cron: str | None) -> str:
    """"Daily", "Weekly", "Monthly", "One-off" or "Scheduled": the word that starts a run's title."""
    if cron is None:
        return "One-off"
    return {"daily": "Daily", "weekly": "Weekly", "monthly": "Monthly"}.get(pick(cron).frequency, "Scheduled")


def _join(words: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def describe(cron: str | None, tz_name: str, run_at: datetime | None = None) -> str:
    """The rule in words: "Every Monday at 07:00, Europe/Berlin"."""
    if cron is None:
        when = run_at.astimezone(zone(tz_name)).strftime("%Y-%m-%d %H:%M") if run_at else "—"
        return f"Once, on {when}, {tz_name}"
    picked = pick(cron)
    if picked.frequency == "daily":
        words = f"Every day at {picked.time}"
    elif picked.frequency == "weekly":
        if picked.weekdays == [1, 2, 3, 4, 5]:
            words = f"Every weekday at {picked.time}"
        else:
            words = f"Every {_join([WEEKDAYS[d] for d in picked.weekdays])} at {picked.time}"
    elif picked.frequency == "monthly":
        words = f"On day {picked.day} of every month at {picked.time}"
    else:
        words = f"Cron “{cron}”"
    return f"{words}, {tz_name}"


# --- relative periods ---------------------------------------------------------------------------

PERIODS = {
    "yesterday": "Yesterday",
    "last_7_days": "The last 7 days",
    "last_week": "Last week (Monday to Sunday)",
    "last_month": "Last month",
    "month_to_date": "This month to date",
}


def resolve_period(period: str, today: date) -> tuple[date, date, str]:
    """The (first day, last day, label) of ``period`` seen on ``today``; RuleError for an unknown one."""
    if period == "yesterday":
        day = today - timedelta(days=1)
        return day, day, day.isoformat()
    if period == "last_7_days":
        return today - timedelta(days=7), today - timedelta(days=1), f"7 days to {today - timedelta(days=1)}"
    if period == "last_week":
        monday = today - timedelta(days=today.weekday() + 7)
        return monday, monday + timedelta(days=6), f"week {monday.isocalendar().week}"
    if period == "last_month":
        last = today.replace(day=1) - timedelta(days=1)
        return last.replace(day=1), last, f"{calendar.month_name[last.month]} {last.year}"
    if period == "month_to_date":
        return today.replace(day=1), today, f"{calendar.month_name[today.month]} {today.year} to date"
    raise RuleError(f"Unknown period {period[:40]!r}: choose one of {', '.join(PERIODS)}.")


def local_date(instant: datetime, tz_name: str) -> date:
    """The calendar date of ``instant`` in ``tz_name``."""
    return instant.astimezone(zone(tz_name)).date()
