"""Benchmarks: targets live here, never in timed unit tests."""


class CannotMeasure(Exception):  # noqa: N818 - a verdict, not an error in the code
    """The machine could not give a measurement (a server never became ready, nothing completed).

    ``python -m bench`` reports it as a row that says so; it is not a crash, so a quick run
    on a busy machine does not fail ``make test``.
    """
