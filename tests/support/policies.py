"""The sample policy, and variants of it built in tests."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from handlers.policy import Policy, parse_policy
from tests.support.paths import SAMPLE_POLICY

SAMPLE: dict[str, Any] = yaml.safe_load(SAMPLE_POLICY.read_text(encoding="utf-8"))


def policy(**changes: Any) -> Policy:
    """The sample policy with some top-level keys replaced."""
    data = copy.deepcopy(SAMPLE)
    data.update(changes)
    return parse_policy(data, "test policy")
