"""Progress of one apply, as "312/503 objects applied".

Called by ``kube_applier.KubeApplier.apply``, which makes one ``Progress`` per call with
the caller's callback, and by ``kube_apply_run``, which advances it as objects settle.
"""

from __future__ import annotations

from collections.abc import Callable

# The callback is told at least every this share of the bundle, and at the end: often
# enough to show movement, rarely enough not to flood a chat message with edits.
PROGRESS_STEPS = 50

ProgressCallback = Callable[[int, int], None]


class Progress:
    """Counts settled objects (applied, unchanged or given up) and tells ``callback``
    ``(settled, total)`` from the calling thread, every ``1/PROGRESS_STEPS`` of the
    bundle and once at the end with ``settled == total``."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self._told = 0
        self._step = max(1, total // PROGRESS_STEPS)
        self._callback = callback

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._callback is None or not count:
            return
        if self.done - self._told >= self._step or self.done >= self.total:
            self._told = self.done
            self._callback(self.done, self.total)
