"""Request ids: ``kf-`` and six lowercase letters or digits.

Created by the command handlers when a request is filed; validated wherever an id
arrives from outside (console lines, button payloads, queue messages).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import NewType

RequestId = NewType("RequestId", str)

REQUEST_ID_PATTERN = re.compile(r"^kf-[a-z0-9]{6}$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

IdFactory = Callable[[], RequestId]


def new_request_id() -> RequestId:
    """A fresh random id; 36**6 (about 2.2e9) values, drawn from the OS's CSPRNG."""
    return RequestId("kf-" + "".join(secrets.choice(_ALPHABET) for _ in range(6)))


def is_request_id(text: str) -> bool:
    return REQUEST_ID_PATTERN.fullmatch(text) is not None
