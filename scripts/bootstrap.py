"""Check that PostgreSQL and Redis are reachable and create the database if it is missing.

Run before migrations by ``make run`` and the tests. Says exactly what is wrong
and how to fix it, instead of a traceback.
"""

from __future__ import annotations

import os
import sys

import psycopg2
import redis
from psycopg2 import sql
from sqlalchemy.engine import make_url

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from webapp import redis_client  # noqa: E402
from webapp.config import ConfigError, database_url  # noqa: E402

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/backhaul"


def ensure_database(raw_url: str) -> str:
    """Create the database named in ``raw_url`` if the server lacks it; return a status line."""
    url = make_url(database_url(raw_url))
    params = {"host": url.host or "127.0.0.1", "port": url.port or 5432, "user": url.username or os.environ.get(
        "PGUSER", "postgres"), "password": url.password, "connect_timeout": 3}
    try:
        conn = psycopg2.connect(dbname="postgres", **params)
    except psycopg2.OperationalError as exc:
        raise SystemExit(
            f"PostgreSQL is not reachable at {params['host']}:{params['port']} ({str(exc).strip().splitlines()[0]}).\n"
            "  Start it (Debian: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)\n"
            "  or point DATABASE_URL at your server, e.g. DATABASE_URL=postgresql://user:pass@host:5432/backhaul"
        ) from None
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,))
        if cur.fetchone():
            status = f"database {url.database} exists"
        else:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
            status = f"database {url.database} created"
    conn.close()
    return status


def recreate_database(server_url: str, name: str, root: str) -> None:
    """Drop and create database ``name`` on ``server_url`` and migrate it (tests and benchmarks only)."""
    import subprocess

    conn = psycopg2.connect(f"{server_url}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conn.close()
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=root,
                            env={**os.environ, "DATABASE_URL": f"{server_url}/{name}"}, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError(f"migrating {name} failed:\n{result.stderr}")


def check_redis(url: str) -> str:
    """Ping Redis; exit with advice when it does not answer."""
    try:
        redis_client.connect(url).ping()
    except redis.exceptions.RedisError as exc:
        raise SystemExit(
            f"Redis is not reachable at {redis_client.display(url)} ({exc}).\n"
            "  Start it (redis-server --daemonize yes --port 6379) or set REDIS_URL=redis://host:6379/0"
        ) from None
    return f"redis at {redis_client.display(url)} answers"


def main() -> int:
    """Check both services; print one line each."""
    try:
        print(ensure_database(os.environ.get("DATABASE_URL", DEFAULT_DB)))
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    print(check_redis(redis_client.url_from_environment()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
