"""Settings, read from the environment in one place.

Fail closed: BACKHAUL_ENV defaults to production, and production refuses to start
without a SECRET_KEY of its own. Only an explicit BACKHAUL_ENV=development gets
working defaults (a random key generated once per checkout, kept out of git); the
test suite sets a random key of its own. No key written in the source is accepted.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from webapp import redis_client

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = ("production", "development", "test")
# Keys that were ever in the source: refused everywhere.
PUBLIC_KEYS = {"test-only-secret-key-never-valid-elsewhere", "dev-only-secret-change-me"}
# Shorter keys can be guessed offline from one signed cookie (secrets.token_hex(16) is 32).
MIN_SECRET_KEY_LENGTH = 32


class ConfigError(RuntimeError):
    """A required setting is missing or malformed."""


def database_url(raw: str) -> str:
    """Normalise a DATABASE_URL so SQLAlchemy always uses the psycopg2 driver.

    Heroku still hands out ``postgres://``; SQLAlchemy 2.1 would pick psycopg 3
    for a bare ``postgresql://``.
    """
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg2://" + raw[len(prefix):]
    if raw.startswith("postgresql+"):
        return raw
    raise ConfigError(f"DATABASE_URL must be a PostgreSQL URL (postgresql://...), got {raw.split(':', 1)[0]}://")


def _int(name: str, default: int) -> int:
    """Read an integer setting, failing loudly on garbage."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    """Read a decimal setting, failing loudly on garbage."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _bool(name: str, default: bool) -> bool:
    """Read a yes/no setting."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _sizes(raw: str) -> dict[str, int]:
    """Parse "thumb=320,medium=1024" into {"thumb": 320, "medium": 1024}."""
    sizes: dict[str, int] = {}
    for part in raw.split(","):
        name, _, px = part.strip().partition("=")
        if not name or not px.isdigit():
            raise ConfigError(f"PHOTO_SIZES must look like thumb=320,medium=1024; got {raw!r}")
        sizes[name] = int(px)
    return sizes


def development_secret_key(path: Path | None = None) -> str:
    """This checkout's development key: generated at random on first use, then read from var/secret_key."""
    path = path or PROJECT_ROOT / "var" / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once keep whichever key was written first.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip()


def _secret_key(env: str, given: str | None) -> str:
    """The key that signs sessions, CSRF tokens and unsubscribe links; refuses to guess outside development."""
    if given:
        if given in PUBLIC_KEYS or len(given) < MIN_SECRET_KEY_LENGTH:
            raise ConfigError(f"SECRET_KEY must be a random value of at least {MIN_SECRET_KEY_LENGTH} characters, "
                              "e.g. python -c 'import secrets; print(secrets.token_hex(32))'")
        return given
    if env == "development":
        return development_secret_key()
    # The test suite sets a random key of its own (tests/conftest.py): no key in the source works anywhere.
    raise ConfigError("SECRET_KEY is not set: Backhaul will not start in production without it "
                      "(set SECRET_KEY, or BACKHAUL_ENV=development on your own machine)")


def load_config(overrides: dict | None = None) -> dict:
    """Build the Flask config mapping from the environment plus ``overrides``."""
    overrides = overrides or {}
    env = os.environ.get("BACKHAUL_ENV", "").strip().lower() or "production"
    if env not in ENVIRONMENTS:
        raise ConfigError(f"BACKHAUL_ENV must be one of {', '.join(ENVIRONMENTS)}; got {env!r}")
    development = env in {"development", "test"}
    secret = _secret_key(env, overrides.get("SECRET_KEY") or os.environ.get("SECRET_KEY"))

    config = {
        "ENV_NAME": env,
        "SECRET_KEY": secret,
        "SQLALCHEMY_DATABASE_URI": database_url(
            os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/backhaul")
        ),
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "pool_pre_ping": True,
            "pool_size": _int("DB_POOL_SIZE", 5),
            "max_overflow": _int("DB_MAX_OVERFLOW", 2),
            "pool_recycle": 1800,
        },
        "REDIS_URL": redis_client.url_from_environment(),
        "STORAGE_BACKEND": os.environ.get("STORAGE_BACKEND", "local"),
        "STORAGE_DIR": os.environ.get("STORAGE_DIR", str(PROJECT_ROOT / "var" / "storage")),
        # Every request body (forms, /login); the upload routes raise it for themselves (webapp/body_limits.py).
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        # The whole multi-photo upload request; each file is also checked against PHOTO_MAX_MB.
        "PHOTO_UPLOAD_MAX_BYTES": (_int("PHOTO_MAX_MB", 50) * _int("PHOTO_MAX_FILES", 20) + 1) * 1024 * 1024,
        "IMPORT_MAX_MB": _int("IMPORT_MAX_MB", 20),
        # The CSV plus the form around it.
        "IMPORT_MAX_BYTES": (_int("IMPORT_MAX_MB", 20) + 1) * 1024 * 1024,
        "PHOTO_MAX_MB": _int("PHOTO_MAX_MB", 50),
        "PHOTO_MAX_FILES": _int("PHOTO_MAX_FILES", 20),
        "PHOTO_MAX_PIXELS": _int("PHOTO_MAX_PIXELS", 100_000_000),
        "PHOTO_SIZES": _sizes(os.environ.get("PHOTO_SIZES", "thumb=320,medium=1024,large=1600")),
        "REPORT_ATTACH_MAX_MB": _int("REPORT_ATTACH_MAX_MB", 10),
        "NEWSLETTER_BATCH_SIZE": _int("NEWSLETTER_BATCH_SIZE", 200),
        "NEWSLETTER_RATE_PER_SECOND": _float("NEWSLETTER_RATE_PER_SECOND", 0),
        "MAIL_SERVER": os.environ.get("MAIL_SERVER", "127.0.0.1"),
        "MAIL_PORT": _int("MAIL_PORT", 8025),
        "MAIL_USE_TLS": _bool("MAIL_USE_TLS", False),
        "MAIL_USE_SSL": _bool("MAIL_USE_SSL", False),
        "MAIL_USERNAME": os.environ.get("MAIL_USERNAME"),
        "MAIL_PASSWORD": os.environ.get("MAIL_PASSWORD"),
        "MAIL_DEFAULT_SENDER": os.environ.get("MAIL_DEFAULT_SENDER", "Backhaul <noreply@backhaul.local>"),
        "MAIL_SINK_DIR": os.environ.get("MAIL_SINK_DIR", ""),
        "PUBLIC_URL": os.environ.get("PUBLIC_URL", "http://127.0.0.1:5000"),
        "JOB_MEMORY_MB": _int("JOB_MEMORY_MB", 512),
        "JOB_HEARTBEAT_SECONDS": _float("JOB_HEARTBEAT_SECONDS", 5),
        "JOB_STALE_SECONDS": _float("JOB_STALE_SECONDS", 20),
        "RECONCILE_SECONDS": _float("RECONCILE_SECONDS", 10),
        "CANCEL_GRACE_SECONDS": _float("CANCEL_GRACE_SECONDS", 30),
        "SHUTDOWN_GRACE_SECONDS": _float("SHUTDOWN_GRACE_SECONDS", 25),
        # Per-kind time limits override webapp/kinds.py, e.g. JOB_TIMEOUT_SALES_REPORT=3600.
        "JOB_TIMEOUTS": {
            key[len("JOB_TIMEOUT_"):].lower(): int(value)
            for key, value in os.environ.items()
            if key.startswith("JOB_TIMEOUT_") and value.isdigit()
        },
        "RETRY_BASE_SECONDS": _float("RETRY_BASE_SECONDS", 5),
        "WORKER_MAX_JOBS": _int("WORKER_MAX_JOBS", 500),
        "RESULT_TTL_SECONDS": _int("RESULT_TTL_SECONDS", 600),
        "FAILURE_TTL_SECONDS": _int("FAILURE_TTL_SECONDS", 3 * 24 * 3600),
        "JOB_RETENTION_DAYS": _int("JOB_RETENTION_DAYS", 30),
        "METRICS_TOKEN": os.environ.get("METRICS_TOKEN", ""),
        "LOG_FORMAT": os.environ.get("LOG_FORMAT", "text"),
        # How long a web process reuses the signed-in account's row (webapp/signed_in.py); 0 = every request.
        "ACCOUNT_CACHE_SECONDS": _float("ACCOUNT_CACHE_SECONDS", 1),
        # Failed log-ins allowed per window (webapp/throttle.py); "N per M minutes" as Flask-Limiter reads it.
        "LOGIN_LIMIT_PER_ACCOUNT": os.environ.get("LOGIN_LIMIT_PER_ACCOUNT", "10 per 15 minutes"),
        "LOGIN_LIMIT_PER_ADDRESS": os.environ.get("LOGIN_LIMIT_PER_ADDRESS", "50 per 15 minutes"),
        # Reverse proxies in front of the app whose X-Forwarded-For/-Proto to believe (Heroku's router: 1).
        "TRUSTED_PROXIES": _int("TRUSTED_PROXIES", 0),
        "WTF_CSRF_TIME_LIMIT": None,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": _bool("SESSION_COOKIE_SECURE", not development),
        # Off in production whatever the environment says: it shows every message the app sent.
        "DEV_MAILBOX": development and _bool("DEV_MAILBOX", True),
        "HSTS": env == "production",
        # The nightly retention prune and other schedules every deployment runs (webapp/scheduling.py);
        # off in the test suite, whose tests count schedules.
        "SYSTEM_SCHEDULES": _bool("SYSTEM_SCHEDULES", env != "test"),
    }
    config.update(overrides)
    return config
