"""The two error kinds that decide what the worker does next.

Raised by cloud clients (translated from library exceptions at the client edge, chained
with ``from e``) and by ``ensure_*`` steps; read by the step engine.  A temporary error
is retried after ``delay`` seconds; a permanent one stops the request and its
``user_message`` is told to the requester in plain words.
"""

from __future__ import annotations


class TemporaryError(Exception):
    """Worth trying again later: unavailable, deadline exceeded, rate limited, busy."""

    def __init__(self, message: str, *, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay


class ConcurrentChange(TemporaryError):
    """A write lost a race: the IAM policy's etag changed since it was read.

    Raised by the cloud clients' ``set_*_iam_policy``; ``iam_edits`` re-reads and
    re-applies the edit, so a concurrent change is kept, never overwritten."""


class PermanentError(Exception):
    """Will not get better by retrying: quota, stock-out, permission, invalid argument.

    ``user_message`` is safe to show in chat: it names what failed and what to do,
    and never carries credentials.
    """

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message
