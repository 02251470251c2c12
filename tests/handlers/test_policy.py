"""The policy file: the sample loads; a bad one is refused with the key path and why."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from handlers.policy import PolicyError, load_policy, parse_duration, parse_policy
from tests.support.paths import SAMPLE_POLICY


def sample() -> dict[str, Any]:
    data = yaml.safe_load(SAMPLE_POLICY.read_text())
    assert isinstance(data, dict)
    return data


def test_the_sample_policy_says_what_spec_promises() -> None:
    policy = load_policy(SAMPLE_POLICY)
    assert policy.approvers.users == ("U_APPROVER",)
    assert policy.projects == ("demo-project",)
    assert policy.zones == ("us-central1-a", "us-central1-c")
    assert policy.gpu_types == ("nvidia-tesla-t4", "nvidia-l4")
    assert policy.four_eyes is True
    assert policy.approval_ttl == timedelta(hours=24)


@pytest.mark.parametrize(
    ("change", "path", "why"),
    [
        (lambda d: d.update(four_eyes="maybe"), "four_eyes", "boolean"),
        (lambda d: d.update(zones=["Mars-1"]), "zones.0", "pattern"),
        (lambda d: d.update(fours_eyes=True), "fours_eyes", "Extra inputs"),
        (lambda d: d["limits"].update(max_gpus_per_node=9), "limits.max_gpus_per_node", "8"),
        (lambda d: d.update(approval_ttl="soon"), "approval_ttl", "duration"),
        (lambda d: d["approvers"].update(users=["bob"]), "approvers.users.0", "pattern"),
        (lambda d: d["defaults"].update(zone="us-central1-b"), "defaults.zone", "not in zones"),
        (lambda d: d.update(approvers={}), "approvers", "at least one"),
        (lambda d: d.pop("projects"), "projects", "Field required"),
        (lambda d: d.update(grant_domains=["Example..com"]), "grant_domains.0", "pattern"),
    ],
)
def test_a_bad_policy_names_the_key_path_and_what_is_wrong(
    tmp_path: Path, change: Any, path: str, why: str
) -> None:
    data = sample()
    change(data)
    file = tmp_path / "policy.yaml"
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError) as caught:
        load_policy(file)
    message = str(caught.value)
    assert str(file) in message
    assert why in message
    assert path in message or why in message.split(":", 1)[1]


def test_a_policy_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(PolicyError, match="mapping"):
        parse_policy(["a", "list"], "p.yaml")


def test_invalid_yaml_is_refused_with_the_file_name(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text("approvers: [unclosed\n")
    with pytest.raises(PolicyError, match=r"broken\.yaml is not valid YAML"):
        load_policy(file)


def test_a_missing_file_is_refused_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), (60, 60)]
)
def test_durations_read_as_people_write_them(text: object, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0h", "-1d", "soon", "", True, 1.5])
def test_nonsense_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_email_domains_limit_grants_only_when_listed() -> None:
    data = sample()
    policy = parse_policy(data)
    assert policy.email_allowed("ada@example.com")
    assert policy.email_allowed("ada@EXAMPLE.com")
    assert not policy.email_allowed("ada@example.com.evil.org")
    data["grant_domains"] = []
    assert parse_policy(data).email_allowed("ada@anywhere.org")
