"""``read_modify_write``: concurrent IAM edits keep one another, stale etags are retried."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from provisioning.cloud import IamPolicy
from provisioning.errors import ConcurrentChange, TemporaryError
from provisioning.iam_edits import read_modify_write
from tests.support.memory_cloud import MemoryCloud

PROJECT = "demo-project"
ROLE = "roles/iap.httpsResourceAccessor"


def grant(cloud: MemoryCloud, member: str) -> bool:
    return read_modify_write(
        lambda: cloud.get_project_iam_policy(PROJECT),
        lambda policy: cloud.set_project_iam_policy(PROJECT, policy),
        lambda policy: policy.with_members(ROLE, frozenset({member})),
    )


def test_fifty_concurrent_grants_to_one_project_all_land() -> None:
    cloud = MemoryCloud()
    members = [f"user:person{n}@example.com" for n in range(50)]

    with ThreadPoolExecutor(max_workers=50) as pool:
        changed = list(pool.map(lambda m: grant(cloud, m), members))

    assert all(changed)
    assert cloud.project_policy(PROJECT).members_of(ROLE) == set(members)
    # Exactly one successful write per grant: none was lost, none written twice.
    assert cloud.mutations["set_project_iam_policy"] == 50


def test_an_edit_that_changes_nothing_writes_nothing() -> None:
    cloud = MemoryCloud()
    grant(cloud, "user:ann@example.com")

    assert grant(cloud, "user:ann@example.com") is False
    assert cloud.mutations["set_project_iam_policy"] == 1


def test_the_edit_is_reapplied_to_the_policy_another_writer_left() -> None:
    cloud = MemoryCloud()
    cloud.before(
        "set_project_iam_policy",
        lambda: cloud.add_project_members(PROJECT, "roles/viewer", ["user:cy@example.com"]),
    )

    assert grant(cloud, "user:ann@example.com") is True

    policy = cloud.project_policy(PROJECT)
    assert policy.members_of(ROLE) == {"user:ann@example.com"}
    assert policy.members_of("roles/viewer") == {"user:cy@example.com"}


def test_losing_every_attempt_asks_the_engine_to_look_again_later() -> None:
    writes: list[IamPolicy] = []
    naps: list[float] = []

    def always_stale(policy: IamPolicy) -> IamPolicy:
        writes.append(policy)
        raise ConcurrentChange("etag is stale")

    with pytest.raises(TemporaryError, match="kept changing") as raised:
        read_modify_write(
            lambda: IamPolicy(etag="e1"),
            always_stale,
            lambda policy: policy.with_members(ROLE, frozenset({"user:ann@example.com"})),
            sleep=naps.append,
            attempts=4,
        )

    assert not isinstance(raised.value, ConcurrentChange)
    assert len(writes) == 4
    assert len(naps) == 3  # between attempts, not after the last
    # Backoff grows: each nap is drawn from a window twice the last one.
    assert all(0 <= nap <= 0.05 * 2**i for i, nap in enumerate(naps))
