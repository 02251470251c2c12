"""Read-modify-write of an IAM policy, retried when another writer got there first.

IAM policies are replaced whole, guarded by their etag: a write carrying a stale etag is
refused (``ConcurrentChange``).  ``read_modify_write`` then reads the policy again and
re-applies the same edit to what is there now, so a concurrent grant is never dropped.
Called by the ``ensure_*`` steps that add or remove IAM members (service accounts'
project roles, Workload Identity, IAP access for grant, revoke and the requester).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from provisioning.cloud import IamPolicy
from provisioning.engine import StepContext
from provisioning.errors import ConcurrentChange, TemporaryError

# Fifty grants to one project at once settle within this many rounds (tested).
ATTEMPTS = 12
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 2.0
# When every attempt lost, the step engine looks again after this many seconds.
GIVE_UP_DELAY = 5.0


def read_modify_write(
    read: Callable[[], IamPolicy],
    write: Callable[[IamPolicy], IamPolicy],
    edit: Callable[[IamPolicy], IamPolicy],
    *,
    sleep: Callable[[float], None] = time.sleep,
    attempts: int = ATTEMPTS,
) -> bool:
    """Apply ``edit`` to the current policy; True when it had to be written.

    ``edit`` must be a pure function of the policy it is given: it runs once per
    attempt, each time on the freshly read policy."""
    backoff = FIRST_BACKOFF
    for attempt in range(attempts):
        if attempt:
            # Full jitter: writers that collided spread out instead of colliding again.
            sleep(random.uniform(0, backoff))  # noqa: S311 - jitter, not a secret
            backoff = min(MAX_BACKOFF, backoff * 2)
        policy = read()
        wanted = edit(policy)
        if wanted == policy:
            return False
        try:
            write(wanted)
        except ConcurrentChange:
            continue
        return True
    raise TemporaryError(
        f"the IAM policy kept changing under {attempts} attempts to update it",
        delay=GIVE_UP_DELAY,
    )


def edit_project_policy(
    ctx: StepContext, project: str, edit: Callable[[IamPolicy], IamPolicy]
) -> bool:
    """``read_modify_write`` on the project's IAM policy through the step's cloud."""
    return read_modify_write(
        lambda: ctx.cloud.get_project_iam_policy(project),
        lambda policy: ctx.cloud.set_project_iam_policy(project, policy),
        edit,
    )
