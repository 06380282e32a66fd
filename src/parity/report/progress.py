"""Progress bars for long captures, comparisons and reports: on a terminal only.

Commands pass the callback to the work (``compare_traces(progress=...)``,
``render_html(progress=...)``); when stderr is not a terminal (a pipe, a CI log) the callback
does nothing, so logs stay clean and output on stdout (JSON, Markdown) is never mixed with bars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["progress_bar"]


def _noop(done: int, total: int, key: str) -> None:
    return None


@contextmanager
def progress_bar(description: str, *, console: Console | None = None,
                 enabled: bool | None = None) -> Iterator[Callable[[int, int, str], None]]:
    """A ``progress(done, total, key)`` callback that drives a transient rich progress bar.

    Args:
        description: what is being done, e.g. ``"comparing"``.
        console: where to draw (default: a stderr console).
        enabled: force the bar on or off; by default it is shown only when ``console`` is a terminal.

    Yields:
        The callback; it does nothing when the bar is disabled.

    Example:
        >>> with progress_bar("comparing", enabled=False) as progress:
        ...     progress(1, 2, "layers.0.q_proj")
    """
    console = console or Console(stderr=True)
    if enabled is None:
        enabled = console.is_terminal
    if not enabled:
        yield _noop
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("[dim]{task.fields[key]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=None, key="")

        def update(done: int, total: int, key: str) -> None:
            bar.update(task, completed=done, total=total, key=key)

        yield update
