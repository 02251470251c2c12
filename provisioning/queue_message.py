"""The queue message: a versioned envelope carrying an approved request.

Published by the approval handler, decoded by the worker.  It carries the request id
and the approved action, so a worker can act even if it reads the store later; the
worker still re-reads the record (level-based), and the store is the source of truth.
A message with a schema version this code does not know is refused with
``MessageSchemaError``, never crashed on, so an older worker can leave it to a newer one.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provisioning.actions import Action
from provisioning.ids import REQUEST_ID_PATTERN, RequestId

SCHEMA_VERSION: Final = 1


class MessageSchemaError(ValueError):
    """The bytes are not a queue message this version of the worker understands."""


class QueueMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: Annotated[str, Field(pattern=REQUEST_ID_PATTERN.pattern)]
    action: Action
    approved_by: str
    approved_at: datetime

    @property
    def id(self) -> RequestId:
        return RequestId(self.request_id)


def encode(message: QueueMessage) -> bytes:
    return message.model_dump_json().encode("utf-8")


def decode(data: bytes) -> QueueMessage:
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as e:
        # ValueError covers bad UTF-8, bad JSON and over-long integers; RecursionError
        # deeply nested arrays.  Any of them: not a message of ours.
        raise MessageSchemaError(f"queue message is not JSON: {str(e)[:200]}") from e
    if not isinstance(raw, dict):
        raise MessageSchemaError("queue message is not a JSON object")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise MessageSchemaError(
            f"unsupported queue message schema_version {version!r}; "
            f"this worker reads version {SCHEMA_VERSION}"
        )
    try:
        return QueueMessage.model_validate(raw)
    except ValidationError as e:
        raise MessageSchemaError(f"invalid queue message: {e.error_count()} error(s): {e}") from e
