"""Per-item time limits for a worker that runs jobs in its own process (no fork).

``time_limit(seconds)`` raises :class:`ItemTimeout` inside the item when time is up:
with SIGALRM in the main thread (rq's job-wide alarm is switched off, see queue.NoJobTimeout),
and in any thread at the pipeline's stage boundaries through :meth:`Deadline.check`.
Native code that never returns to Python cannot be interrupted this way: the worker's
heartbeat thread then exits the process after a grace period, and the watchdog re-queues
the job (worker.py).
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager


class ItemTimeout(Exception):
    """The item ran past its time limit."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.expires_at - time.monotonic()

    def check(self) -> None:
        if self.remaining() <= 0:
            raise ItemTimeout(f"the item ran past its time limit of {self.seconds:g} s")


@contextmanager
def time_limit(seconds: float):
    """Yields a :class:`Deadline`; raises ItemTimeout in the body once it passes."""
    deadline = Deadline(seconds)
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    if not use_alarm:
        yield deadline
        return

    def on_alarm(signum, frame):
        raise ItemTimeout(f"the item ran past its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield deadline
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
