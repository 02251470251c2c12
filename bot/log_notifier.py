"""A ``Notifier`` that writes progress to the log, for a worker with no chat configured."""

from __future__ import annotations

import logging

from provisioning.records import RequestRecord

log = logging.getLogger(__name__)


class LogNotifier:
    def progress(self, record: RequestRecord) -> None:
        done = sum(1 for s in record.steps if s.status in ("done", "planned", "skipped"))
        log.info("%s %s: %d/%d steps", record.id, record.deployment, done, len(record.steps))

    def succeeded(self, record: RequestRecord, *, dry_run: bool) -> None:
        log.info("%s succeeded%s %s", record.id, " (dry-run)" if dry_run else "", record.url or "")

    def failed(self, record: RequestRecord, *, reason: str, will_retry: bool) -> None:
        log.warning("%s failed: %s (retry: %s)", record.id, reason, will_retry)
