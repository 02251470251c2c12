"""How the Google Cloud clients call their APIs: deadlines, read retries, delays.

Shared by ``gke_client`` and ``compute_client`` (and the clients that follow), so every
Google call is bounded the same way and a temporary failure asks the step engine to
look again after the same delay.
"""

from __future__ import annotations

from google.api_core import exceptions
from google.api_core.retry import Retry, if_exception_type

# Seconds before the step engine tries again after a temporary failure.
TRANSIENT_DELAY = 10.0
# Per-call deadline; the libraries' own defaults are minutes long.
CALL_TIMEOUT = 30.0
# Reads retry a flaky connection briefly; mutations never retry here (the step engine
# re-runs the whole ensure step, which observes first).
READ_RETRY = Retry(
    predicate=if_exception_type(exceptions.ServiceUnavailable),
    initial=0.25,
    maximum=2.0,
    multiplier=2.0,
    timeout=8.0,
)
