"""The IAM part of ``Cloud`` over ``IamClient``, as the gcp cloud delegates it.

For tests that run the grant and revoke steps through the real Resource Manager client
against the local fake, without the rest of the gcp cloud: ``test_access_steps`` and
``test_access_commands``.
"""

from __future__ import annotations

from provisioning.iam_client import IamClient


class IamOnlyCloud:
    dry_run = False

    def __init__(self, iam: IamClient) -> None:
        self.get_project_iam_policy = iam.get_project_iam_policy
        self.set_project_iam_policy = iam.set_project_iam_policy

    def drain_calls(self) -> list[str]:
        return []
