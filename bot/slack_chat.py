"""Slack's Web API behind the handlers' ``Chat`` and ``Directory`` protocols.

Built by the composition root for ``serve`` and for a ``worker`` that has a bot token.
The ``WebClient`` it wraps retries connection errors, 5xx answers and 429s (after the
``Retry-After`` Slack sends), so a burst of progress updates slows down instead of
failing.  Slack errors are logged by method and error code only: never the token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from handlers.chat import Blocks, ChatError
from provisioning.records import MessageRef

log = logging.getLogger(__name__)

RATE_LIMIT_RETRIES = 3
DIRECTORY_CACHE_SECONDS = 300.0


def web_client(token: str, base_url: str, *, timeout: int = 10) -> WebClient:
    """A WebClient on ``base_url`` (``SLACK_API_URL``) that retries what is worth it."""
    client = WebClient(token=token, base_url=base_url, timeout=timeout)
    client.retry_handlers = [
        ConnectionErrorRetryHandler(max_retry_count=2),
        ServerErrorRetryHandler(max_retry_count=2),
        RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
    ]
    return client


@contextmanager
def _translated(method: str) -> Iterator[None]:
    """Slack's refusals, and a Slack out of reach after the retries, as ``ChatError``."""
    try:
        yield
    except SlackApiError as e:
        code = str(e.response.get("error") or f"HTTP {e.response.status_code}")
        raise ChatError(method, code) from e
    except OSError as e:
        raise ChatError(method, "slack_unreachable") from e


class SlackChat:
    """``Chat`` over the Web API: messages, in-place updates, ephemeral replies.

    Slack's refusals become ``ChatError`` (method and Slack's error code only)."""

    def __init__(self, client: WebClient) -> None:
        self._client = client

    def post(
        self, channel: str, text: str, *, thread_ts: str | None = None, blocks: Blocks | None = None
    ) -> MessageRef:
        with _translated("chat.postMessage"):
            response = self._client.chat_postMessage(
                channel=channel,
                text=text,
                thread_ts=thread_ts,
                blocks=list(blocks) if blocks is not None else None,
                unfurl_links=False,
                unfurl_media=False,
            )
        return MessageRef(channel=str(response["channel"]), ts=str(response["ts"]))

    def update(self, ref: MessageRef, text: str, *, blocks: Blocks | None = None) -> None:
        with _translated("chat.update"):
            self._client.chat_update(
                channel=ref.channel,
                ts=ref.ts,
                text=text,
                # An empty list removes the card's buttons; None would keep them.
                blocks=list(blocks) if blocks is not None else [],
            )

    def ephemeral(self, channel: str, user: str, text: str) -> None:
        with _translated("chat.postEphemeral"):
            self._client.chat_postEphemeral(channel=channel, user=user, text=text)


class SlackDirectory:
    """``Directory`` over the Web API, with answers cached for a few minutes."""

    def __init__(
        self,
        client: WebClient,
        *,
        cache_seconds: float = DIRECTORY_CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = cache_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, object]] = {}

    def _cached(self, key: tuple[str, str], load: Callable[[], object]) -> object:
        """``load()``'s answer, kept for the TTL.  A Slack error is logged and read as
        "nobody" (no approver found, no email) without being kept, so the next look-up
        tries again rather than a click going unanswered."""
        now = self._monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and now - hit[0] < self._ttl:
                return hit[1]
        try:
            value = load()
        except SlackApiError as e:
            log.warning("directory look-up %s failed: %s", key[0], e.response.get("error"))
            return None
        with self._lock:
            self._cache[key] = (now, value)
        return value

    def _group_ids(self) -> dict[str, str]:
        response = self._client.usergroups_list()
        groups: list[dict[str, object]] = response.get("usergroups", [])
        return {str(group["handle"]): str(group["id"]) for group in groups}

    def group_members(self, handle: str) -> frozenset[str]:
        def load() -> frozenset[str]:
            group_id = self._group_ids().get(handle)
            if group_id is None:
                log.warning("user group @%s named in the policy does not exist", handle)
                return frozenset()
            response = self._client.usergroups_users_list(usergroup=group_id)
            users: list[str] = response.get("users", [])
            return frozenset(str(user) for user in users)

        members = self._cached(("group", handle), load)
        return members if isinstance(members, frozenset) else frozenset()

    def user_for_email(self, email: str) -> str | None:
        def load() -> str | None:
            try:
                response = self._client.users_lookupByEmail(email=email)
            except SlackApiError as e:
                if e.response.get("error") == "users_not_found":
                    return None
                raise
            return str(response["user"]["id"])

        found = self._cached(("email", email), load)
        return found if isinstance(found, str) else None

    def email_of(self, user: str) -> str | None:
        def load() -> str | None:
            try:
                response = self._client.users_info(user=user)
            except SlackApiError as e:
                if e.response.get("error") == "user_not_found":
                    return None  # a definite answer: kept like any other
                raise
            email = response["user"].get("profile", {}).get("email")
            return str(email) if email else None

        found = self._cached(("user", user), load)
        return found if isinstance(found, str) else None
