"""Behaviour of the queue message envelope: round trips, and refusing what it cannot read.

Whatever bytes arrive, ``decode`` returns a ``QueueMessage`` or raises
``MessageSchemaError``: the Pub/Sub queue catches exactly that to nack a message this
worker cannot read, so any other exception would escape its callback.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioning.actions import Action, CreateAction, DeleteAction, GrantAction, RevokeAction
from provisioning.queue_message import (
    SCHEMA_VERSION,
    MessageSchemaError,
    QueueMessage,
    decode,
    encode,
)
from provisioning.spec import DeploymentSpec, GpuSpec

ACTIONS: dict[str, Action] = {
    "create with a GPU": CreateAction(
        spec=DeploymentSpec(
            name="ml-lab",
            project="ml-project-1",
            zone="us-central1-a",
            gpu=GpuSpec(type="nvidia-l4", count=2, machine_type="g2-standard-24", max_nodes=4),
        ),
        requester_email="ada@example.com",
    ),
    "create without a GPU": CreateAction(
        spec=DeploymentSpec(name="ml-lab", project="ml-project-1", zone="europe-west4-b")
    ),
    "grant": GrantAction(email="bo@example.com", deployment="ml-lab", project="ml-project-1"),
    "revoke": RevokeAction(email="bo@example.com", deployment="ml-lab", project="ml-project-1"),
    "delete": DeleteAction(deployment="ml-lab", project="ml-project-1", zone="us-central1-a"),
}


def message(action: Action | None = None) -> QueueMessage:
    return QueueMessage(
        request_id="kf-q1w2e3",
        action=action or ACTIONS["grant"],
        approved_by="U0APPROVER",
        approved_at=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
    )


def raw(**changes: Any) -> dict[str, Any]:
    """A valid message as JSON values, with ``changes`` applied."""
    fields: dict[str, Any] = json.loads(encode(message()))
    fields.update(changes)
    return fields


def as_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize("kind", list(ACTIONS))
def test_every_kind_of_action_survives_an_encode_and_decode_round_trip(kind: str) -> None:
    original = message(ACTIONS[kind])

    decoded = decode(encode(original))

    assert decoded == original
    assert type(decoded.action) is type(original.action)


def test_an_encoded_message_carries_the_current_schema_version() -> None:
    assert json.loads(encode(message()))["schema_version"] == SCHEMA_VERSION == 1


def test_a_message_from_a_newer_schema_version_is_refused_naming_the_version() -> None:
    with pytest.raises(MessageSchemaError, match=r"schema_version 99\b"):
        decode(as_bytes(raw(schema_version=99)))


def test_a_message_without_a_schema_version_is_refused() -> None:
    fields = raw()
    del fields["schema_version"]

    with pytest.raises(MessageSchemaError, match="schema_version None"):
        decode(as_bytes(fields))


@pytest.mark.parametrize("data", [b"not json", b"{", b"\xff\xfe\x00garbage", b""])
def test_bytes_that_are_not_json_are_refused(data: bytes) -> None:
    with pytest.raises(MessageSchemaError, match="not JSON"):
        decode(data)


@pytest.mark.parametrize("value", [[raw()], "kf-q1w2e3", 1, None])
def test_json_that_is_not_an_object_is_refused(value: Any) -> None:
    with pytest.raises(MessageSchemaError, match="not a JSON object"):
        decode(as_bytes(value))


@pytest.mark.parametrize("missing", ["request_id", "action", "approved_by", "approved_at"])
def test_a_message_missing_a_field_is_refused(missing: str) -> None:
    fields = raw()
    del fields[missing]

    with pytest.raises(MessageSchemaError, match="invalid queue message"):
        decode(as_bytes(fields))


@pytest.mark.parametrize(
    "changes",
    [
        {"request_id": "kf-UPPER1"},
        {"action": {"kind": "resize", "deployment": "ml-lab"}},
        {"action": {"kind": "grant", "email": "not an email", "deployment": "ml-lab"}},
        {"approved_at": "yesterday"},
        {"unexpected": True},
    ],
)
def test_a_message_with_a_wrong_field_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(MessageSchemaError, match="invalid queue message"):
        decode(as_bytes(raw(**changes)))


def test_deeply_nested_json_is_refused_as_a_schema_error() -> None:
    with pytest.raises(MessageSchemaError):
        decode(b"[" * 100_000)


def test_a_huge_integer_literal_is_refused_as_a_schema_error() -> None:
    with pytest.raises(MessageSchemaError):
        decode(b"9" * 5000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_decoding_arbitrary_bytes_gives_a_message_or_a_schema_error(data: bytes) -> None:
    try:
        decoded = decode(data)
    except MessageSchemaError:
        return
    assert isinstance(decoded, QueueMessage)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "request_id": st.sampled_from(["kf-q1w2e3", "kf-", ""]) | json_values,
            "action": st.sampled_from([raw()["action"]]) | json_values,
            "approved_by": json_values,
            "approved_at": st.sampled_from(["2026-03-02T09:30:00Z"]) | json_values,
            "extra": json_values,
        },
    )
)
def test_decoding_arbitrary_version_1_objects_gives_a_message_or_a_schema_error(
    fields: dict[str, Any],
) -> None:
    data = as_bytes({"schema_version": SCHEMA_VERSION, **fields})
    try:
        decoded = decode(data)
    except MessageSchemaError:
        return
    assert decoded.request_id == fields["request_id"]
