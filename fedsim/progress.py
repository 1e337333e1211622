"""Progress with an ETA for long steps outside the rounds (the warm start, …).

``step_progress(total, what, log)`` yields ``tick()``, called once per step. On a terminal it
draws a ``rich`` progress bar on stderr (elapsed, ETA); elsewhere (a log file, a notebook
cell's captured output, a test) it passes ``log`` one line at every tenth of the steps
once the step has run ``quiet_s`` (5 s): ``warm start …: 30 % (120/400 steps), 12 s, ETA
28 s`` — a short step stays silent. The ETA is the elapsed time times the share of steps
left over the share done.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator


def eta_text(done: int, total: int, elapsed: float) -> str:
    """``"30 % (120/400 steps), 12 s, ETA 28 s"`` (no ETA before the first step)."""
    share = done / total if total else 1.0
    eta = f", ETA {elapsed * (total - done) / done:.0f} s" if done else ""
    return f"{100 * share:.0f} % ({done}/{total} steps), {elapsed:.0f} s{eta}"


@contextlib.contextmanager
def step_progress(total: int, what: str, log: Callable[[str], None] = print, *,
                  terminal: bool | None = None, clock: Callable[[], float] = time.perf_counter,
                  quiet_s: float = 5.0) -> Iterator[Callable[[], None]]:
    """Yield ``tick``; report ``total`` steps of ``what`` (see the module docstring).
    ``terminal``: draw the bar (default: stderr is a terminal); ``clock``: for tests."""
    terminal = sys.stderr.isatty() if terminal is None else terminal
    start, done = clock(), 0
    if terminal:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(what, total=total)
            yield lambda: bar.advance(task)
        return
    next_tenth, printed = 1, False

    def tick() -> None:
        nonlocal done, next_tenth, printed
        done += 1
        if total and next_tenth <= 10 and done * 10 >= next_tenth * total:
            elapsed = clock() - start
            if elapsed >= quiet_s or (done == total and printed):
                log(f"{what}: {eta_text(done, total, elapsed)}")
                printed = True
            next_tenth = done * 10 // total + 1  # one line however many tenths this step crossed

    yield tick
