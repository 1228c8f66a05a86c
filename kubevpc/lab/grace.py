"""Pods deleted with a grace period (kubectl's --grace-period, the pod's
terminationGracePeriodSeconds): when each one's period ends, and a timer that wakes the Lab then
to remove them. The Lab (kubevpc/lab/lab.py) plans them as terminating until then."""
from __future__ import annotations

import threading
import time
from typing import Callable


def check_grace_period(value) -> None:
    """None (the pod's own) or a whole number of seconds, 0 or more; else ValueError."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"grace period {value!r}: expected a whole number of seconds, 0 or more")


class Terminations:
    """Terminating pods by key, each with the time (monotonic) its grace period ends. `wake` is
    called from a timer thread once the first one has ended; it takes them out with `due`."""

    def __init__(self, wake: Callable[[], None]):
        self.ends: dict[str, float] = {}
        self.wake = wake
        self._timer: threading.Timer | None = None

    def __contains__(self, key: str) -> bool:
        return key in self.ends

    def keys(self) -> frozenset[str]:
        return frozenset(self.ends)

    def start(self, ends: dict[str, float]) -> None:
        self.ends.update(ends)
        self.schedule()

    def forget(self, keys) -> None:
        for key in keys:
            self.ends.pop(key, None)
        self.schedule()

    def shorten(self, key: str, grace_period: int | None) -> float:
        """A shorter grace period replaces the rest of `key`'s, as the API server allows on a second
        delete; a longer one changes nothing. Returns the seconds left."""
        if grace_period is not None:
            self.ends[key] = min(self.ends[key], time.monotonic() + grace_period)
        self.schedule()
        return max(0.0, self.ends[key] - time.monotonic())

    def left(self) -> dict[str, float]:
        now = time.monotonic()
        return {k: round(max(0.0, t - now), 3) for k, t in sorted(self.ends.items())}

    def due(self) -> set[str]:
        """The pods whose grace period has ended, no longer counted as terminating."""
        now = time.monotonic()
        out = {k for k, t in self.ends.items() if t <= now + 0.005}
        for key in out:
            del self.ends[key]
        return out

    def retry(self, delay: float) -> None:
        """Try again in `delay` seconds (removing them failed)."""
        for key in self.ends:
            self.ends[key] = max(self.ends[key], time.monotonic() + delay)
        self.schedule()

    def schedule(self) -> None:
        """Wake up when the first grace period ends."""
        self.cancel()
        if self.ends:
            delay = max(0.0, min(self.ends.values()) - time.monotonic())
            self._timer = threading.Timer(delay, self.wake)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
