"""The page number of a paged list, read from ?page= so that no value can crash the query."""

from __future__ import annotations

from flask import abort, request

# 50 rows a page: the offset stays far inside PostgreSQL's bigint.
MAX_PAGE = 1_000_000


def page_number() -> int:
    """?page= as a number from 1; missing or not a number is page 1, beyond MAX_PAGE is a 404."""
    page = request.args.get("page", 1, type=int) or 1
    if page > MAX_PAGE:
        abort(404, "There is no such page.")
    return max(1, page)
