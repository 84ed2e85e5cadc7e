"""Exceptions job code raises to say how a failure should be treated."""

from __future__ import annotations


class JobFailed(Exception):
    """A permanent failure with a short message for the user; never retried."""


class TransientError(Exception):
    """A failure worth trying again later (a server away, a 4xx from SMTP)."""


class JobCancelled(Exception):
    """The user cancelled the job; raised at the job's next check."""
