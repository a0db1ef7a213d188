"""Live update of the query builder: a change searches after a quiet period (debounce), once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Debouncer"]


class Debouncer:
    """Runs ``run()`` ``delay`` seconds after the last :meth:`schedule` (at once, synchronously, for ``delay <= 0``).

    :attr:`lock` is held while ``run()`` runs from the timer; the owner takes it around its own runs too.
    """

    def __init__(self, delay: float, run: Callable[[], object]):
        self.delay, self.run = float(delay), run
        self.lock = threading.RLock()
        self._timer: threading.Timer | None = None

    def schedule(self) -> None:
        """Run after the quiet period (a later call restarts it)."""
        if self.delay <= 0:
            self.run()
            return
        with self.lock:
            self.cancel()
            timer = threading.Timer(self.delay, self._fire)
            timer.daemon = True
            self._timer = timer
            timer.start()

    def _fire(self) -> None:
        with self.lock:
            if self._timer is not threading.current_thread():
                return  # superseded by a later change
            self._timer = None
            self.run()

    def cancel(self) -> None:
        """Drop a pending run."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    @property
    def pending(self) -> bool:
        """True while a run waits for its quiet period to end."""
        return self._timer is not None

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait until a pending run has run; True when nothing is pending any more."""
        deadline = time.monotonic() + timeout
        while True:
            timer = self._timer
            if timer is None:
                with self.lock:  # a running search holds the lock
                    return self._timer is None
            timer.join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                return self._timer is None
