"""The custom OAuth client IAP uses, when the operators configure one.

Built once by ``bot``'s composition root from ``KUBEFLOW_BOT_OAUTH_CLIENT_ID`` and
``KUBEFLOW_BOT_OAUTH_CLIENT_SECRET`` and handed through the worker to the IAP step
(``StepContext.oauth_client``), which puts it in the ``kubeflow-oauth`` Secret on the
cluster.  The secret is a ``SecretStr``: a repr, a log line or an f-string shows
``**********``; only ``secret_value()`` reveals it, and only the Secret body calls that.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr


@dataclass(frozen=True)
class OAuthClient:
    """A Web-application OAuth client (gcp-reference S11): its id and its secret."""

    client_id: str
    client_secret: SecretStr

    def __post_init__(self) -> None:
        if not self.client_id.strip():
            raise ValueError("the OAuth client id is empty")
        if not self.client_secret.get_secret_value().strip():
            # Says which setting, never what it holds.
            raise ValueError("the OAuth client secret is empty")

    def secret_value(self) -> str:
        return self.client_secret.get_secret_value()
