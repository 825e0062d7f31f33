"""Bonus work gives way to a run that is waiting.

After a run's results are on disk, the warm worker still owes it a cross-validation (k heads: ~5 s) and an
export check (reload model.keras, predict again: ~3 s). A user who fixes labels and clicks Retrain in that window
must not wait for them. The worker runs such work inside `giving_way_when(a run is queued)`; the work calls
`give_way_if_asked()` between its steps (the cross-validation: after every epoch), which raises `GaveWay`, and the
worker does it again later from the start. (The export check, one uncut call, is instead a child process that the
worker pauses: `core.engine.worker.Deferred.command`.) Outside the worker (the command line, tests) nothing ever
asks, and the work runs straight through."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

_asked: Callable[[], bool] = lambda: False  # noqa: E731


class GaveWay(BaseException):
    """Raised inside bonus work when a run is waiting; the work is repeated later, from its start. A BaseException
    (like GeneratorExit): a signal, not an error, so the bonus work's own `except Exception` never records it as
    the work's failure."""


def give_way_if_asked() -> None:
    if _asked():
        raise GaveWay()


@contextlib.contextmanager
def giving_way_when(asked: Callable[[], bool]) -> Iterator[None]:
    global _asked
    previous, _asked = _asked, asked
    try:
        yield
    finally:
        _asked = previous
