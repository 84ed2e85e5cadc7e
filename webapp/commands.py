"""Command-line tools: ``flask --app wsgi users|demo|jobs|schedules ...``."""

from __future__ import annotations

import json
import uuid

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import func, select

from webapp import queueing, reconciler, retention, schedule_firing, scheduling
from webapp.extensions import db
from webapp.models import Job, Schedule, User
from webapp.schedule_rules import RuleError, describe

users_cli = AppGroup("users", help="Manage accounts.")
demo_cli = AppGroup("demo", help="Demo data.")
jobs_cli = AppGroup("jobs", help="Inspect and repair background jobs.")
schedules_cli = AppGroup("schedules", help="Recurring jobs: add, list, pause, resume, run, delete.")


@users_cli.command("create")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--admin", is_flag=True, help="Give the account the admin role.")
@click.option("--if-missing", is_flag=True, help="Do nothing when the account exists.")
def create_user(email: str, password: str, admin: bool, if_missing: bool) -> None:
    """Create an account (or update its password and role)."""
    user = db.session.scalar(select(User).where(func.lower(User.email) == email.lower()))
    if user is not None and if_missing:
        click.echo(f"{email} exists; left as it is")
        return
    if len(password) < 8:
        raise click.BadParameter("use at least 8 characters", param_hint="--password")
    if user is None:
        user = User(email=email.lower())
        db.session.add(user)
    user.set_password(password)
    user.is_admin = admin
    db.session.commit()
    click.echo(f"{'admin' if admin else 'user'} {email} ready")


@demo_cli.command("seed")
@click.option("--orders", default=100_000, show_default=True)
@click.option("--subscribers", default=10_000, show_default=True)
def seed(orders: int, subscribers: int) -> None:
    """Add demo customers, orders and subscribers (only into empty tables)."""
    from webapp.demo_data import seed_demo_data

    added = seed_demo_data(orders=orders, subscribers=subscribers)
    click.echo("demo data: " + (", ".join(f"{v:,} {k}" for k, v in added.items() if v) or "already present"))


def _job(job_id: str) -> Job:
    """The job with this id, or a clean CLI error."""
    try:
        job = db.session.get(Job, uuid.UUID(job_id))
    except ValueError:
        job = None
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    return job


@jobs_cli.command("list")
@click.option("--status", default=None, help="queued, running, succeeded, failed or cancelled")
@click.option("--kind", default=None)
@click.option("--owner", default=None, help="owner e-mail")
@click.option("--limit", default=20, show_default=True)
def list_jobs(status: str | None, kind: str | None, owner: str | None, limit: int) -> None:
    """List recent jobs."""
    stmt = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if status:
        stmt = stmt.where(Job.status == status)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    if owner:
        stmt = stmt.join(User, User.id == Job.owner_id).where(func.lower(User.email) == owner.lower())
    for job in db.session.scalars(stmt):
        progress = f"{job.percent}%" if job.percent is not None else "-"
        click.echo(f"{job.id}  {job.created_at:%Y-%m-%d %H:%M:%S}  {job.kind:<18} {job.status:<10} "
                   f"{progress:>5}  {job.attempts}/{job.max_attempts}  {job.title[:50]}")


@jobs_cli.command("show")
@click.argument("job_id")
def show_job(job_id: str) -> None:
    """Print one job as JSON."""
    click.echo(json.dumps(_job(job_id).to_dict(), indent=2))


@jobs_cli.command("retry")
@click.argument("job_id")
def retry_job(job_id: str) -> None:
    """Queue a failed or cancelled job again."""
    if queueing.retry(_job(job_id).id) is None:
        raise click.ClickException("only a failed or cancelled job can be retried")
    click.echo("queued again")


@jobs_cli.command("cancel")
@click.argument("job_id")
def cancel_job(job_id: str) -> None:
    """Cancel a queued or running job."""
    job = queueing.cancel(_job(job_id).id)
    if job is None:
        raise click.ClickException("that job has already finished")
    click.echo(job.message)


@jobs_cli.command("reconcile")
def reconcile_jobs() -> None:
    """Repair differences between job rows and Redis now."""
    repairs = reconciler.reconcile_if_leader()
    if repairs.skipped:
        click.echo("another reconciler is running; try again in a few seconds")
        return
    click.echo(f"{repairs.total} repairs ({repairs.interrupted} interrupted, {repairs.requeued} handed over, "
               f"{repairs.stopped} stopped)")
    for line in repairs.details:
        click.echo(f"  {line}")


@jobs_cli.command("prune")
@click.option("--days", type=int, default=None, help="keep this many days (default JOB_RETENTION_DAYS)")
def prune_jobs(days: int | None) -> None:
    """Delete old finished jobs, their files and history."""
    counts = retention.prune(days)
    click.echo(", ".join(f"{v} {k}" for k, v in counts.items()) + " deleted")


def _iso(value) -> str | None:
    """A timestamp as ISO 8601, or None."""
    return value.isoformat() if value else None


def _schedule(schedule_id: int) -> Schedule:
    """The schedule with this id, or a clean CLI error."""
    schedule = db.session.get(Schedule, schedule_id)
    if schedule is None:
        raise click.ClickException(f"no schedule {schedule_id}")
    return schedule


@schedules_cli.command("add")
@click.argument("kind")
@click.option("--cron", required=True, help='five-field cron expression, e.g. "0 7 * * 1" (Mondays 07:00)')
@click.option("--tz", default="UTC", show_default=True, help="time zone, e.g. Europe/Berlin")
@click.option("--params", "params_json", default="{}", help='JSON, as the form submits it, e.g. {"period": "last_week"}')
@click.option("--owner", required=True, help="owner e-mail (the runs are their jobs)")
@click.option("--grace", type=int, default=None, help="seconds a missed slot may still be caught up")
def add_schedule(kind: str, cron: str, tz: str, params_json: str, owner: str, grace: int | None) -> None:
    """Add a schedule and print its id."""
    user = db.session.scalar(select(User).where(func.lower(User.email) == owner.lower()))
    if user is None:
        raise click.ClickException(f"no account {owner}: create it first with `users create`")
    try:
        params = json.loads(params_json)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"--params is not valid JSON ({exc})") from None
    try:
        schedule = scheduling.create_schedule(kind, user.id, params, cron, tz, grace_seconds=grace)
    except RuleError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(schedule.id)


@schedules_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def list_schedules(as_json: bool) -> None:
    """List every schedule."""
    for schedule in db.session.scalars(select(Schedule).order_by(Schedule.id)):
        row = {"id": schedule.id, "kind": schedule.kind, "cron": schedule.cron, "tz": schedule.tz,
               "next_run_at": _iso(schedule.next_run_at), "last_run_at": _iso(schedule.last_run_at),
               "paused": schedule.paused}
        if as_json:
            click.echo(json.dumps(row))
            continue
        state = f"paused ({schedule.paused_reason})" if schedule.paused and schedule.paused_reason else schedule.state
        click.echo(f"{schedule.id:>4}  {schedule.kind:<16} {describe(schedule.cron, schedule.tz, schedule.run_at):<45} "
                   f"next {row['next_run_at'] or '-':<26} {state}")


@schedules_cli.command("pause")
@click.argument("schedule_id", type=int)
def pause_schedule(schedule_id: int) -> None:
    """Stop firing a schedule."""
    scheduling.pause(_schedule(schedule_id).id, "Paused from the command line")
    click.echo("paused")


@schedules_cli.command("resume")
@click.argument("schedule_id", type=int)
def resume_schedule(schedule_id: int) -> None:
    """Fire again from the next slot."""
    try:
        schedule = scheduling.resume(_schedule(schedule_id).id)
    except RuleError as exc:
        raise click.ClickException(str(exc)) from None
    if schedule is None:
        raise click.ClickException(f"no schedule {schedule_id}")
    click.echo(f"active; next run {_iso(schedule.next_run_at)}")


@schedules_cli.command("delete")
@click.argument("schedule_id", type=int)
def delete_schedule(schedule_id: int) -> None:
    """Delete a schedule (the jobs it made stay)."""
    scheduling.delete_schedule(_schedule(schedule_id).id)
    click.echo("deleted")


@schedules_cli.command("run")
@click.argument("schedule_id", type=int)
def run_schedule(schedule_id: int) -> None:
    """Run a schedule once now; prints the job id."""
    try:
        jobs = schedule_firing.run_now(_schedule(schedule_id).id)
    except RuleError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(jobs[0].id)


def register_commands(app: Flask) -> None:
    """Attach the command groups to the app."""
    for group in (users_cli, demo_cli, jobs_cli, schedules_cli):
        app.cli.add_command(group)
