"""Schedules: slots, DST, periods, missed slots and catch-up (pure functions with an injected `now`),
firing into real job rows, the CLI, the pages and the scheduled newsletter."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from webapp import queueing, schedule_firing, schedule_rules, scheduling
from webapp.extensions import db
from webapp.models import Job, Newsletter, Schedule, ScheduleRun, User
from webapp.schedule_rules import RuleError, describe, next_slot, plan_due, resolve_period

BERLIN = "Europe/Berlin"


def utc(*args) -> datetime:
    """A UTC instant."""
    return datetime(*args, tzinfo=UTC)


def berlin(instant: datetime) -> str:
    """An instant as Berlin wall-clock time with its offset."""
    return instant.astimezone(schedule_rules.zone(BERLIN)).strftime("%Y-%m-%d %H:%M %z")


def slots(cron: str, tz: str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` slots after ``after``."""
    found = []
    for _ in range(count):
        after = next_slot(cron, tz, after)
        found.append(after)
    return found


# --- rules -------------------------------------------------------------------------------------


def test_a_daily_0230_berlin_schedule_runs_once_at_0300_on_spring_forward_day():
    """02:30 does not exist on 2026-03-29 in Berlin: that day's run is at 03:00 CEST, once."""
    got = [berlin(s) for s in slots("30 2 * * *", BERLIN, utc(2026, 3, 27, 12), 3)]
    assert got == ["2026-03-28 02:30 +0100", "2026-03-29 03:00 +0200", "2026-03-30 02:30 +0200"]


def test_a_daily_0230_berlin_schedule_runs_once_on_fall_back_day():
    """02:30 happens twice on 2026-10-25 in Berlin: it runs at the first one only."""
    got = [berlin(s) for s in slots("30 2 * * *", BERLIN, utc(2026, 10, 23, 12), 3)]
    assert got == ["2026-10-24 02:30 +0200", "2026-10-25 02:30 +0200", "2026-10-26 02:30 +0100"]
    # Even asked from inside the repeated hour (after the first 02:30), the second one is not a slot.
    assert berlin(next_slot("30 2 * * *", BERLIN, utc(2026, 10, 25, 1, 10))) == "2026-10-26 02:30 +0100"


def test_slots_inside_the_spring_forward_gap_fold_into_one():
    """Every-15-minutes: 02:00..02:45 do not exist; together with 03:00 they are one slot."""
    got = [berlin(s) for s in slots("*/15 * * * *", BERLIN, utc(2026, 3, 29, 0, 40), 4)]
    assert got == ["2026-03-29 01:45 +0100", "2026-03-29 03:00 +0200", "2026-03-29 03:15 +0200",
                   "2026-03-29 03:30 +0200"]


def test_slots_of_a_weekly_rule_follow_the_local_clock_across_dst():
    """Mondays at 07:00 Berlin are 06:00 UTC in winter and 05:00 UTC in summer."""
    assert slots("0 7 * * 1", BERLIN, utc(2026, 3, 20), 2) == [utc(2026, 3, 23, 6), utc(2026, 3, 30, 5)]


def test_several_missed_slots_give_one_catch_up_run_and_the_rest_are_missed():
    """Down from Friday to Tuesday 09:00 with a daily 07:00 rule and a 6-hour grace: Tuesday's slot runs late."""
    plan = plan_due("0 7 * * *", BERLIN, utc(2026, 11, 27, 6), utc(2026, 12, 1, 8), 6 * 3600)
    assert plan.run == utc(2026, 12, 1, 6) and plan.catch_up
    assert plan.missed == [utc(2026, 11, 27, 6), utc(2026, 11, 28, 6), utc(2026, 11, 29, 6), utc(2026, 11, 30, 6)]
    assert plan.next_run_at == utc(2026, 12, 2, 6)


def test_a_slot_older_than_the_grace_window_is_missed_not_run():
    """Back at 14:00 with a 6-hour grace: the 07:00 run is not made up."""
    plan = plan_due("0 7 * * *", BERLIN, utc(2026, 12, 1, 6), utc(2026, 12, 1, 13), 6 * 3600)
    assert plan.run is None and plan.missed == [utc(2026, 12, 1, 6)] and plan.missed_total == 1


def test_an_on_time_slot_is_not_a_catch_up():
    """Fired a second after its slot: an ordinary run."""
    plan = plan_due("* * * * *", "UTC", utc(2026, 12, 1, 8), utc(2026, 12, 1, 8, 0, 1), 60)
    assert plan.run == utc(2026, 12, 1, 8) and not plan.catch_up and plan.missed == []


def test_a_year_of_missed_minutes_is_counted_without_listing_them_all():
    """A minutely schedule down since January: one catch-up run, the rest counted as missed."""
    plan = plan_due("* * * * *", "UTC", utc(2026, 1, 1), utc(2026, 12, 1, 8), 3600)
    assert plan.run == utc(2026, 12, 1, 8) and plan.catch_up
    assert plan.missed_total >= 5000 and plan.next_run_at == utc(2026, 12, 1, 8, 1)


@pytest.mark.parametrize(("cron", "words"), [
    ("0 7 * * 1", "Every Monday at 07:00, Europe/Berlin"),
    ("30 6 * * 1,4", "Every Monday and Thursday at 06:30, Europe/Berlin"),
    ("0 7 * * 1,2,3,4,5", "Every weekday at 07:00, Europe/Berlin"),
    ("0 7 * * *", "Every day at 07:00, Europe/Berlin"),
    ("15 6 1 * *", "On day 1 of every month at 06:15, Europe/Berlin"),
    ("*/5 * * * *", "Cron “*/5 * * * *”, Europe/Berlin"),
])
def test_rules_read_as_words(cron, words):
    """The list shows the rule as a person would say it."""
    assert describe(cron, BERLIN) == words


@pytest.mark.parametrize(("today", "period", "expected"), [
    (date(2026, 11, 30), "last_week", ("2026-11-23", "2026-11-29", "week 48")),
    (date(2026, 12, 1), "last_month", ("2026-11-01", "2026-11-30", "November 2026")),
    (date(2026, 1, 1), "last_month", ("2025-12-01", "2025-12-31", "December 2025")),
    (date(2026, 3, 1), "yesterday", ("2026-02-28", "2026-02-28", "2026-02-28")),
    (date(2026, 12, 15), "month_to_date", ("2026-12-01", "2026-12-15", "December 2026 to date")),
])
def test_relative_periods_resolve_to_dates(today, period, expected):
    """"Last week" seen on a Monday is the previous Monday to Sunday, and so on."""
    first, last, label = resolve_period(period, today)
    assert (first.isoformat(), last.isoformat(), label) == expected


@pytest.mark.parametrize(("cron", "message"), [
    ("0 7 * *", "write five fields"),
    ("61 7 * * *", "minute 0-59"),
    ("0 7 * * * *", "write five fields"),
    ("every monday", "write five fields"),
])
def test_invalid_cron_expressions_are_explained(cron, message):
    """A bad expression is refused with what to write instead."""
    with pytest.raises(RuleError, match=message):
        schedule_rules.check_cron(cron)


def test_an_unknown_time_zone_is_explained():
    """A misspelt zone is refused with an example."""
    with pytest.raises(RuleError, match="Unknown time zone 'Europe/Berlinn'.*Europe/Berlin"):
        schedule_rules.zone("Europe/Berlinn")


# --- firing into job rows ----------------------------------------------------------------------


def runs_of(schedule_id: int) -> list[ScheduleRun]:
    """The schedule's runs, oldest slot first."""
    db.session.expire_all()
    return db.session.scalars(
        select(ScheduleRun).where(ScheduleRun.schedule_id == schedule_id).order_by(ScheduleRun.slot_at)
    ).all()


def test_a_due_slot_fires_once_into_a_job_with_the_period_resolved(ctx, users):
    """Monday 07:00 Berlin: one export of last week's orders, titled with the week; firing again adds nothing."""
    created = utc(2026, 11, 29, 12)
    schedule = scheduling.create_schedule("export_orders", users["alice"], {"period": "last_week", "status": "paid"},
                                          "0 7 * * 1", BERLIN, now=created)
    assert schedule.next_run_at == utc(2026, 11, 30, 6)
    fired_at = utc(2026, 11, 30, 6, 0, 2)
    assert schedule_firing.fire_due(fired_at) == 1
    assert schedule_firing.fire_due(fired_at + timedelta(seconds=5)) == 0
    [run] = runs_of(schedule.id)
    job = db.session.get(Job, run.job_id)
    assert job.params == {"date_from": "2026-11-23", "date_to": "2026-11-29", "status": "paid"}
    assert job.title == "Weekly orders export — week 48" and job.owner_id == users["alice"]
    assert not run.catch_up and run.slot_at == utc(2026, 11, 30, 6)
    db.session.refresh(schedule)
    assert schedule.next_run_at == utc(2026, 12, 7, 6) and schedule.last_job_id == job.id


def test_the_unique_slot_row_stops_a_second_firing_even_when_next_run_at_is_stale(ctx, users):
    """Another process that read an old next_run_at cannot fire the same slot: the (schedule, slot) row exists."""
    schedule = scheduling.create_schedule("selftest", users["root"], {}, "0 * * * *", "UTC", now=utc(2026, 12, 1, 7, 30))
    schedule_firing.fire_due(utc(2026, 12, 1, 8, 0, 1))
    schedule = db.session.get(Schedule, schedule.id)
    schedule.next_run_at = utc(2026, 12, 1, 8)  # as if the advance had been lost
    db.session.commit()
    assert schedule_firing.fire_due(utc(2026, 12, 1, 8, 0, 3)) == 0
    assert db.session.scalar(select(func.count()).select_from(Job)) == 1


def test_a_report_schedule_with_recipients_makes_the_email_wait_for_the_report(ctx, users):
    """A scheduled report with recipients is a report job plus an e-mail job that depends on it."""
    schedule = scheduling.create_schedule(
        "sales_report", users["alice"], {"period": "last_month", "recipients": "ops@example.com, boss@example.com"},
        "0 7 1 * *", BERLIN, now=utc(2026, 11, 20))
    schedule_firing.fire_due(utc(2026, 12, 1, 6, 0, 1))
    jobs = db.session.scalars(select(Job).order_by(Job.created_at)).all()
    report, mail = sorted(jobs, key=lambda j: j.kind != "sales_report")
    assert report.title == "Monthly sales report — November 2026"
    assert report.params["date_from"] == "2026-11-01" and report.params["date_to"] == "2026-11-30"
    assert mail.kind == "mail_report" and mail.depends_on_id == report.id
    assert mail.params["recipients"] == ["ops@example.com", "boss@example.com"]
    assert runs_of(schedule.id)[0].job_id == report.id


def test_missed_slots_are_recorded_and_one_catch_up_runs(ctx, users):
    """Three days down: three slots missed, today's slot runs once as a catch-up."""
    schedule = scheduling.create_schedule("selftest", users["root"], {}, "0 7 * * *", BERLIN, now=utc(2026, 11, 27))
    schedule_firing.fire_due(utc(2026, 12, 1, 8))
    runs = runs_of(schedule.id)
    assert [(r.missed, r.catch_up) for r in runs] == [(True, False)] * 4 + [(False, True)]
    assert db.session.scalar(select(func.count()).select_from(Job)) == 1
    assert db.session.get(Schedule, schedule.id).missed_count == 4


def test_a_schedule_whose_owner_was_removed_is_paused_with_the_reason(ctx, users):
    """Its runs would belong to nobody: it stops, and says why."""
    schedule = scheduling.create_schedule("export_orders", users["bob"], {"period": "yesterday"}, "0 7 * * *", "UTC")
    db.session.delete(db.session.get(User, users["bob"]))
    db.session.commit()
    schedule_firing.fire_due(utc(2030, 1, 1))
    schedule = db.session.get(Schedule, schedule.id)
    assert schedule.paused and schedule.paused_reason == schedule_firing.OWNER_GONE
    assert db.session.scalar(select(func.count()).select_from(Job)) == 0
    with pytest.raises(RuleError, match="owner's account was removed"):
        scheduling.resume(schedule.id)


def test_pause_stops_firing_and_resume_starts_from_the_next_slot(ctx, users):
    """Slots while paused are not caught up."""
    schedule = scheduling.create_schedule("selftest", users["root"], {}, "0 * * * *", "UTC", now=utc(2026, 12, 1, 7, 30))
    scheduling.pause(schedule.id)
    assert schedule_firing.fire_due(utc(2026, 12, 1, 9, 30)) == 0
    resumed = scheduling.resume(schedule.id, now=utc(2026, 12, 1, 9, 30))
    assert resumed.next_run_at == utc(2026, 12, 1, 10) and runs_of(schedule.id) == []


# --- the command line --------------------------------------------------------------------------


def test_operators_declare_and_manage_schedules_with_the_cli(app, users):
    """add prints the id; list --json is one object per line; pause, resume, run and delete do what they say."""
    runner = app.test_cli_runner()
    added = runner.invoke(args=["schedules", "add", "sales_report", "--cron", "0 7 * * 1", "--tz", BERLIN,
                                "--params", json.dumps({"period": "last_week", "recipients": ["ops@example.com"]}),
                                "--owner", "alice@example.com"])
    assert added.exit_code == 0, added.output
    schedule_id = int(added.output.strip())
    [line] = runner.invoke(args=["schedules", "list", "--json"]).output.strip().splitlines()
    listed = json.loads(line)
    assert listed["id"] == schedule_id and listed["cron"] == "0 7 * * 1" and listed["tz"] == BERLIN
    assert listed["paused"] is False and listed["last_run_at"] is None
    assert datetime.fromisoformat(listed["next_run_at"]).astimezone(schedule_rules.zone(BERLIN)).strftime("%a %H:%M") \
        == "Mon 07:00"
    assert "Every Monday at 07:00, Europe/Berlin" in runner.invoke(args=["schedules", "list"]).output

    assert runner.invoke(args=["schedules", "pause", str(schedule_id)]).exit_code == 0
    assert json.loads(runner.invoke(args=["schedules", "list", "--json"]).output)["paused"] is True
    assert runner.invoke(args=["schedules", "resume", str(schedule_id)]).exit_code == 0
    ran = runner.invoke(args=["schedules", "run", str(schedule_id)])
    assert ran.exit_code == 0, ran.output
    with app.app_context():
        job = db.session.get(Job, uuid.UUID(ran.output.strip()))
        assert job.kind == "sales_report" and job.owner_id == users["alice"]
    assert runner.invoke(args=["schedules", "delete", str(schedule_id)]).exit_code == 0
    assert runner.invoke(args=["schedules", "list", "--json"]).output.strip() == ""
    assert runner.invoke(args=["schedules", "pause", str(schedule_id)]).exit_code != 0


@pytest.mark.parametrize(("args", "message"), [
    (["--cron", "0 7 * *"], "Invalid cron expression '0 7 * *'"),
    (["--cron", "0 25 * * *"], "Invalid cron expression"),
    (["--cron", "0 7 * * *", "--tz", "Mars/Olympus"], "Unknown time zone 'Mars/Olympus'"),
    (["--cron", "0 7 * * *", "--owner", "nobody@example.com"], "no account nobody@example.com"),
    (["--cron", "0 7 * * *", "--params", "{oops"], "--params is not valid JSON"),
    (["--cron", "0 7 * * *", "--params", '{"period": "last_decade"}'], "Unknown period 'last_decade'"),
    (["--cron", "0 7 * * *", "--params", '{"colour": "red"}'], "Unknown parameter 'colour'"),
])
def test_bad_cli_input_gets_a_clear_message_and_a_failing_exit(app, users, args, message):
    """Nothing is created; the message says what to fix."""
    base = {"--tz": "UTC", "--owner": "alice@example.com", "--params": '{"period": "yesterday"}'}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    result = app.test_cli_runner().invoke(
        args=["schedules", "add", "export_orders", *[part for pair in base.items() for part in pair]])
    assert result.exit_code != 0 and message in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Schedule)) == 0


# --- the pages ---------------------------------------------------------------------------------


def schedule_form(**fields) -> dict:
    """What the schedule form posts for a weekly Monday 07:00 Berlin rule."""
    data = {"frequency": "weekly", "time": "07:00", "weekdays": ["1"], "day": "1", "cron": "", "tz": BERLIN,
            "grace_hours": "6", "period": "last_week", "status": "", "customer": "", "recipients": ""}
    data.update(fields)
    return data


def test_a_person_repeats_a_report_edits_pauses_runs_and_deletes_it(app, as_alice, users):
    """The whole life of a schedule through the pages, as alice would click it."""
    assert "Repeat this…" in as_alice.get("/reports/new").get_data(as_text=True)
    page = as_alice.get("/schedules/new?kind=sales_report")
    assert page.status_code == 200 and "Repeat a sales report" in page.get_data(as_text=True)
    created = as_alice.post("/schedules/new", {"kind": "sales_report", **schedule_form(recipients="ops@example.com")},
                            form_page="/schedules/new?kind=sales_report")
    assert created.status_code == 303, created.get_data(as_text=True)
    show_url = created.headers["Location"]
    listing = as_alice.get("/schedules/").get_data(as_text=True)
    assert "Every Monday at 07:00, Europe/Berlin" in listing
    assert "Sales report for last week (Monday to Sunday), e-mailed to 1 recipient" in listing
    assert ">active<" in listing and "alice@example.com" in listing

    edited = as_alice.post(show_url + "/edit", schedule_form(frequency="monthly", day="1", time="06:30"),
                           form_page=show_url + "/edit")
    assert edited.status_code == 303
    assert "On day 1 of every month at 06:30, Europe/Berlin" in as_alice.get(show_url).get_data(as_text=True)

    assert as_alice.post(show_url + "/pause", form_page=show_url).status_code == 303
    assert "Paused by alice@example.com" in as_alice.get("/schedules/").get_data(as_text=True)
    assert as_alice.post(show_url + "/resume", form_page=show_url).status_code == 303

    ran = as_alice.post(show_url + "/run", form_page=show_url)
    assert ran.status_code == 303 and "/jobs/" in ran.headers["Location"]
    job_page = as_alice.get(ran.headers["Location"]).get_data(as_text=True)
    assert "Sales report (run now)" in job_page
    assert "run now" in as_alice.get(show_url).get_data(as_text=True)

    assert as_alice.post(show_url + "/delete", form_page=show_url).status_code == 303
    assert "No schedules yet" in as_alice.get("/schedules/").get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Job).where(Job.kind == "sales_report")) == 1


@pytest.mark.parametrize(("fields", "message"), [
    ({"frequency": "cron", "cron": "0 7 * *"}, "Invalid cron expression"),
    ({"tz": "Berlin"}, "Unknown time zone &#39;Berlin&#39;"),
    ({"weekdays": []}, "Choose at least one weekday."),
    ({"frequency": "daily", "time": "7 o'clock"}, "Invalid time"),
    ({"recipients": "not-an-address"}, "is not a valid e-mail address"),
])
def test_the_form_explains_bad_input(as_alice, fields, message):
    """A 400 with the reason on the form; nothing is created."""
    response = as_alice.post("/schedules/new", {"kind": "sales_report", **schedule_form(**fields)},
                             form_page="/schedules/new?kind=sales_report")
    assert response.status_code == 400 and message in response.get_data(as_text=True)


def test_each_person_sees_only_their_schedules_and_system_ones_are_for_admins(app, users, as_alice, as_bob, as_admin):
    """Bob cannot see or touch alice's schedule; only admins create or see the nightly prune."""
    with app.app_context():
        mine = scheduling.create_schedule("export_orders", users["alice"], {"period": "yesterday"}, "0 6 * * *",
                                          "UTC").id
        prune = scheduling.create_schedule("prune_jobs", users["root"], {}, "30 3 * * *", "UTC").id
    assert as_bob.get(f"/schedules/{mine}").status_code == 404
    assert as_bob.post(f"/schedules/{mine}/run", form_page="/schedules/").status_code == 404
    assert as_alice.get(f"/schedules/{prune}").status_code == 404
    assert as_alice.get("/schedules/new?kind=prune_jobs").status_code == 404
    page = as_admin.get("/schedules/").get_data(as_text=True)
    assert "System schedules" in page and "Retention prune" in page and "Every day at 03:30, UTC" in page


def test_hostile_text_in_a_schedule_is_shown_as_text(app, users, as_alice):
    """A customer filter with markup appears escaped on the form."""
    with app.app_context():
        schedule = scheduling.create_schedule("sales_report", users["alice"],
                                              {"period": "yesterday", "customer": "<script>x()</script>"},
                                              "0 6 * * *", "UTC").id
    page = as_alice.get(f"/schedules/{schedule}/edit").get_data(as_text=True)
    assert "<script>x()</script>" not in page and "&lt;script&gt;" in page


# --- newsletters at a chosen time --------------------------------------------------------------


def make_newsletter(app, owner_id: int) -> int:
    """A draft newsletter."""
    with app.app_context():
        newsletter = Newsletter(owner_id=owner_id, subject="Winter sale", body="Hello {{ name }}")
        db.session.add(newsletter)
        db.session.commit()
        return newsletter.id


def test_a_newsletter_scheduled_for_later_is_shown_cancellable_and_refuses_the_past(app, users, as_alice):
    """Tomorrow 09:00 is accepted and shown; yesterday is refused with the reason; cancel makes it a draft again."""
    newsletter_id = make_newsletter(app, users["alice"])
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).astimezone(schedule_rules.zone(BERLIN))
    form_page = f"/newsletters/{newsletter_id}"
    past = as_alice.post(f"/schedules/newsletter/{newsletter_id}", {"send_at": "2020-05-01T09:00", "tz": BERLIN},
                         form_page=form_page, follow_redirects=True)
    assert "2020-05-01 09:00 is in the past" in past.get_data(as_text=True)
    done = as_alice.post(f"/schedules/newsletter/{newsletter_id}",
                         {"send_at": f"{tomorrow:%Y-%m-%d}T09:00", "tz": BERLIN}, form_page=form_page,
                         follow_redirects=True)
    assert f"Scheduled for {tomorrow:%Y-%m-%d} 09:00" in done.get_data(as_text=True)
    with app.app_context():
        pending = scheduling.pending_newsletter_send(newsletter_id)
        assert berlin(pending.run_at).startswith(f"{tomorrow:%Y-%m-%d} 09:00")
    listing = as_alice.get("/schedules/").get_data(as_text=True)
    assert f"Once, on {tomorrow:%Y-%m-%d} 09:00, Europe/Berlin" in listing and "Newsletter" in listing
    cancelled = as_alice.post(f"/schedules/newsletter/{newsletter_id}/cancel", form_page=form_page,
                              follow_redirects=True)
    assert "the newsletter is a draft again" in cancelled.get_data(as_text=True)
    with app.app_context():
        assert scheduling.pending_newsletter_send(newsletter_id) is None


def test_a_scheduled_newsletter_fires_once_and_is_marked_sending(ctx, users):
    """At its time the send job is created and recorded on the newsletter; the schedule is done."""
    newsletter = db.session.get(Newsletter, make_newsletter(ctx, users["alice"]))
    schedule = scheduling.schedule_newsletter(newsletter, users["alice"], datetime(2026, 12, 8, 9, 0), BERLIN,
                                              now=utc(2026, 12, 1))
    assert schedule.run_at == utc(2026, 12, 8, 8)
    assert schedule_firing.fire_due(utc(2026, 12, 8, 8, 0, 1)) == 1
    assert schedule_firing.fire_due(utc(2026, 12, 8, 9)) == 0
    newsletter = db.session.get(Newsletter, newsletter.id)
    job = db.session.get(Job, newsletter.send_job_id)
    assert job.kind == "send_newsletter" and db.session.get(Schedule, schedule.id).state == "done"


# --- metrics and operations --------------------------------------------------------------------


def test_metrics_show_schedule_lag_and_missed_slots(app, users, as_admin):
    """After a catch-up with missed slots, /metrics counts them; an overdue schedule shows its lag."""
    with app.app_context():
        scheduling.create_schedule("selftest", users["root"], {}, "0 7 * * *", "UTC", now=utc(2026, 11, 27))
        schedule_firing.fire_due(utc(2026, 12, 1, 8))
        overdue = scheduling.create_schedule("selftest", users["root"], {}, "0 7 * * *", "UTC")
        overdue.next_run_at = datetime.now(UTC) - timedelta(seconds=90)
        db.session.commit()
    text = as_admin.get("/metrics").get_data(as_text=True)
    assert 'backhaul_schedule_missed_slots_total{kind="selftest"} 4.0' in text
    lag = float(next(line.split()[-1] for line in text.splitlines() if line.startswith("backhaul_schedule_lag_seconds")))
    assert 85 < lag < 600


@pytest.mark.parametrize(("day_start", "expected_slot"), [
    (utc(2026, 3, 28, 23), utc(2026, 3, 29, 1)),     # spring forward: 02:30 does not exist, runs at 03:00 CEST
    (utc(2026, 10, 24, 22), utc(2026, 10, 25, 0, 30)),  # fall back: the first 02:30 (CEST) only
])
def test_a_0230_berlin_schedule_fires_once_on_dst_days_with_the_clock_stepped_through_the_day(
        ctx, users, day_start, expected_slot):
    """The clock looks every 5 minutes for a whole DST day (a frozen, stepped clock: a real wait is impossible)."""
    schedule = scheduling.create_schedule("selftest", users["root"], {}, "30 2 * * *", BERLIN,
                                          now=day_start - timedelta(hours=1))
    for step in range(0, 24 * 60, 5):
        schedule_firing.fire_due(day_start + timedelta(minutes=step, seconds=1))
    [run] = runs_of(schedule.id)
    assert run.slot_at == expected_slot and not run.missed and not run.catch_up
    assert db.session.scalar(select(func.count()).select_from(Job)) == 1


def test_the_operations_and_newsletter_partials_render_on_their_own(app, users):
    """The partials the Operations and newsletter pages include need nothing from those views."""
    from flask import render_template

    newsletter_id = make_newsletter(app, users["alice"])
    with app.test_request_context():
        scheduling.create_schedule("export_orders", users["alice"], {"period": "yesterday"}, "0 6 * * *", "UTC")
        newsletter = db.session.get(Newsletter, newsletter_id)
        scheduling.schedule_newsletter(newsletter, users["alice"], datetime(2099, 1, 5, 9, 0), BERLIN)
        ops = render_template("schedules/_ops_next_runs.html")
        assert "Every day at 06:00, UTC" in ops and "Orders export for yesterday" in ops
        assert "Once, on 2099-01-05 09:00, Europe/Berlin" in ops
        part = render_template("schedules/_newsletter_schedule.html", newsletter=newsletter)
        assert "Scheduled for <strong>2099-01-05 09:00 CET</strong>" in part and "Cancel the scheduled send" in part


def test_the_nightly_retention_prune_is_a_system_schedule_that_prunes(app, users, as_admin, burst_worker):
    """The admin adds it from the Schedules page (daily 03:30 UTC offered); run now prunes old finished jobs."""
    page = as_admin.get("/schedules/new?kind=prune_jobs").get_data(as_text=True)
    assert 'value="03:30"' in page and 'value="UTC"' in page
    created = as_admin.post("/schedules/new", {"kind": "prune_jobs", **schedule_form(
        frequency="daily", time="03:30", tz="UTC", days="1")}, form_page="/schedules/new?kind=prune_jobs")
    assert created.status_code == 303
    with app.app_context():
        old = queueing.submit("selftest", users["alice"], {}, "an old self-test").id
    burst_worker("fast")
    with app.app_context():
        # As if it had finished three days ago.
        db.session.execute(update(Job).where(Job.id == old).values(finished_at=datetime.now(UTC) - timedelta(days=3)))
        db.session.commit()
    ran = as_admin.post(created.headers["Location"] + "/run", form_page=created.headers["Location"])
    burst_worker("default")
    with app.app_context():
        prune_job = db.session.get(Job, uuid.UUID(ran.headers["Location"].rsplit("/", 1)[-1]))
        assert prune_job.status == "succeeded" and prune_job.result["summary"].startswith("1 jobs")
        assert db.session.get(Job, old) is None


def test_a_scheduled_newsletter_missed_while_down_is_not_sent_late_and_says_so(app, users):
    """Back more than an hour after the chosen time: nothing is sent, and the newsletter page explains it."""
    from flask import render_template

    newsletter_id = make_newsletter(app, users["alice"])
    with app.test_request_context():
        newsletter = db.session.get(Newsletter, newsletter_id)
        scheduling.schedule_newsletter(newsletter, users["alice"], datetime(2026, 12, 8, 9, 0), BERLIN,
                                       now=utc(2026, 12, 1))
        assert schedule_firing.fire_due(utc(2026, 12, 8, 10, 30)) == 0
        newsletter = db.session.get(Newsletter, newsletter_id)
        assert newsletter.send_job_id is None
        part = render_template("schedules/_newsletter_schedule.html", newsletter=newsletter)
        assert "The send scheduled for 2026-12-08 09:00 CET was missed" in part and "Schedule the send" in part


def test_removing_an_owner_pauses_their_schedule_at_the_next_clock_look(ctx, users):
    """Not only when its slot comes: the clock sees it as due at once and pauses it."""
    schedule = scheduling.create_schedule("export_orders", users["bob"], {"period": "yesterday"}, "0 7 1 1 *", "UTC")
    db.session.delete(db.session.get(User, users["bob"]))
    db.session.commit()
    assert schedule_firing.seconds_until_due() <= 0
    schedule_firing.fire_due()
    assert db.session.get(Schedule, schedule.id).paused and schedule_firing.seconds_until_due() is None


@pytest.mark.parametrize("path", ["/schedules/", "/schedules/new?kind=export_orders", "/schedules/1"])
def test_schedule_pages_need_a_login(client, path):
    """Logged out, every schedule page sends you to the login form."""
    response = client.get(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_schedule_form_posted_without_its_csrf_token_is_refused(app, as_alice):
    """CSRF is checked on every form: nothing is created."""
    response = as_alice.client.post("/schedules/new", data={"kind": "export_orders", **schedule_form()})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Schedule)) == 0
