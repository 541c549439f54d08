"""Progress of the long computations (sampling batches, MAP stages, reweighting rounds, SMC
temperatures): a bar on stderr when it is a terminal and not under CI, a line of the command line's
own status display (`to_status`), or nothing. Estimators report; they never decide how it is shown.

    with progress.task("MAP stages", total=4) as update:
        ...
        update(1, "N = 10000")   # completed so far (absolute), and what is being done
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

Update = Callable[..., None]  # update(completed, text="")

_STATUS: ContextVar[Callable[[str], None] | None] = ContextVar("status", default=None)
_BAR: ContextVar[Progress | None] = ContextVar("bar", default=None)


def shown(flag: bool | None = None) -> bool:
    """Whether a bar is drawn: `flag` where given, else only on an interactive terminal outside CI."""
    if flag is not None:
        return flag
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextmanager
def to_status(update_status: Callable[[str], None]) -> Iterator[None]:
    """Within the block every task reports as one line through `update_status` (the CLI's spinner)."""
    token = _STATUS.set(update_status)
    try:
        yield
    finally:
        _STATUS.reset(token)


@contextmanager
def task(description: str, total: float, show: bool | None = None) -> Iterator[Update]:
    """Yield update(completed, text="") for one computation of `total` steps. Nested tasks share
    the enclosing bar (one line each) instead of starting a second display."""
    status = _STATUS.get()
    if status is not None:
        yield lambda completed, text="": status(f"{description}: {text or f'{completed:g} of {total:g}'}")
        return
    bar = _BAR.get()
    if bar is None and not shown(show):
        yield lambda completed, text="": None
        return
    owner = bar is None
    if owner:
        columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
        bar = Progress(*columns, console=Console(stderr=True), transient=True)
        bar.start()
    token = _BAR.set(bar)
    handle = bar.add_task(description, total=total)
    try:
        yield lambda completed, text="": bar.update(
            handle, completed=completed, description=f"{description} {text}".rstrip()
        )
    finally:
        bar.remove_task(handle)
        _BAR.reset(token)
        if owner:
            bar.stop()
