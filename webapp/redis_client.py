"""Every Redis client in Backhaul is built here: web, worker, reconciler, rq-dashboard, CLI, scripts.

One place decides the options, so ``rediss://`` with a self-signed certificate (what
Heroku Redis presents) works in every process at once, and pages never hang on Redis.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

from redis import Redis

# Heroku sets REDIS_TLS_URL beside REDIS_URL on plans that offer TLS; prefer it.
URL_VARIABLES = ("REDIS_TLS_URL", "REDIS_URL")
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def url_from_environment() -> str:
    """The Redis URL the environment names (REDIS_TLS_URL first, as Heroku sets it)."""
    for name in URL_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return DEFAULT_URL


def display(url: str) -> str:
    """``url`` fit for a log or a terminal: the password (Heroku's URLs carry one) masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def client_options(url: str, *, timeout: float | None = 5.0) -> dict:
    """Connection options for ``url``: short timeouts, and certificates unchecked on rediss://.

    Heroku Redis presents a self-signed certificate with no CA to check it against: the
    connection is still encrypted, but a verifying client refuses it.
    """
    options: dict = {"socket_connect_timeout": 2, "socket_timeout": timeout, "health_check_interval": 30}
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = None
        options["ssl_check_hostname"] = False
    return options


def connect(url: str, *, timeout: float | None = 5.0) -> Redis:
    """A new client for ``url`` (``timeout=None`` for a worker's blocking reads)."""
    return Redis.from_url(url, **client_options(url, timeout=timeout))


@lru_cache(maxsize=32)
def _shared(url: str, pid: int, thread: int) -> Redis:
    """One client per URL, process and thread.

    Per thread because a worker's reconciler thread must never hold a pool lock
    that a forked work horse would inherit; per process because a fork must not
    share sockets with its parent.
    """
    return connect(url)


def shared(url: str) -> Redis:
    """The client for ``url`` belonging to this process and thread."""
    return _shared(url, os.getpid(), threading.get_ident())
