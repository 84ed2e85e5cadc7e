"""The parameters a schedule keeps for each kind it can run, checked, and what it runs in words."""

from __future__ import annotations

from datetime import date
from typing import Any

from webapp import schedule_rules, submissions
from webapp.models import Schedule
from webapp.models.order import ORDER_STATUSES
from webapp.schedule_rules import RuleError

# Kind -> (what a run is called in titles, only admins may schedule it).
SCHEDULABLE: dict[str, tuple[str, bool]] = {
    "export_orders": ("orders export", False),
    "sales_report": ("sales report", False),
    "send_newsletter": ("newsletter", False),
    "prune_jobs": ("retention prune", True),
    "selftest": ("self-test", True),
}
SELFTEST_KEYS = {"seconds", "fail_attempts", "marker"}


class ScheduleError(RuleError):
    """A schedule that cannot be made, changed or fired as asked; the message is for the person."""


def clean_params(kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The parameters a schedule of ``kind`` keeps, checked; ScheduleError names what is wrong."""
    if kind not in SCHEDULABLE or kind == "send_newsletter":
        names = ", ".join(k for k in SCHEDULABLE if k != "send_newsletter")
        raise ScheduleError(f"Kind {kind[:40]!r} cannot be scheduled here; choose one of {names}.")
    if not isinstance(raw, dict):
        raise ScheduleError("Parameters must be a JSON object.")
    allowed = {"export_orders": {"period", "date_from", "date_to", "status"},
               "sales_report": {"period", "date_from", "date_to", "status", "customer", "recipients"},
               "prune_jobs": {"days"}, "selftest": SELFTEST_KEYS}[kind]
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ScheduleError(f"Unknown parameter {unknown[0][:40]!r} for {kind}; use {', '.join(sorted(allowed))}.")
    if kind == "prune_jobs":
        return _days_param(raw)
    if kind == "selftest":
        return {k: v for k, v in raw.items() if isinstance(v, int | float | str)}
    params: dict[str, Any] = _period_params(raw)
    status = raw.get("status") or None
    if status is not None and status not in ORDER_STATUSES:
        raise ScheduleError(f"Unknown order status {str(status)[:40]!r}; use one of {', '.join(ORDER_STATUSES)}.")
    params["status"] = status
    if kind == "sales_report":
        customer = str(raw.get("customer") or "").strip()
        if len(customer) > 100:
            raise ScheduleError("The customer filter is limited to 100 characters.")
        params["customer"] = customer or None
        try:
            params["recipients"] = submissions.parse_recipients(raw.get("recipients") or "")
        except ValueError as exc:
            raise ScheduleError(str(exc)) from None
        if len(params["recipients"]) > submissions.MAX_RECIPIENTS:
            raise ScheduleError(f"At most {submissions.MAX_RECIPIENTS} recipients.")
    return params


def _days_param(raw: dict[str, Any]) -> dict[str, Any]:
    """{"days": N} for the prune, or {} for the configured retention."""
    if raw.get("days") in (None, ""):
        return {}
    try:
        days = int(raw["days"])
    except (TypeError, ValueError):
        days = 0
    if days < 1:
        raise ScheduleError("days must be a whole number of at least 1.")
    return {"days": days}


def _period_params(raw: dict[str, Any]) -> dict[str, Any]:
    """A relative period (resolved at each run) or a fixed date range."""
    period = raw.get("period") or None
    if period is not None:
        if period not in schedule_rules.PERIODS:
            raise ScheduleError(f"Unknown period {str(period)[:40]!r}; use one of {', '.join(schedule_rules.PERIODS)}.")
        return {"period": period}
    try:
        first, last = date.fromisoformat(str(raw["date_from"])), date.fromisoformat(str(raw["date_to"]))
    except (KeyError, ValueError):
        raise ScheduleError("Give a period (e.g. \"last_week\") or date_from and date_to as YYYY-MM-DD.") from None
    if last < first:
        raise ScheduleError("The end date is before the start date.")
    return {"date_from": first.isoformat(), "date_to": last.isoformat()}


def what_it_runs(schedule: Schedule) -> str:
    """A schedule's job in words: "Sales report for last week, e-mailed to 2 recipients"."""
    if schedule.newsletter is not None:
        return f"Newsletter “{schedule.newsletter.subject}”"
    label = SCHEDULABLE.get(schedule.kind, (schedule.kind, False))[0]
    params = schedule.params or {}
    words = label[0].upper() + label[1:]
    if "period" in params:
        period = schedule_rules.PERIODS[params["period"]]
        words += f" for {period[0].lower()}{period[1:]}"
    elif "date_from" in params:
        words += f" for {params['date_from']} to {params['date_to']}"
    if params.get("status"):
        words += f" ({params['status']} orders)"
    if params.get("recipients"):
        count = len(params["recipients"])
        words += f", e-mailed to {count} recipient{'s' if count != 1 else ''}"
    return words
