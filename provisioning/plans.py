"""Which steps each kind of request runs.  Called by the worker and by the dry-run planner."""

from __future__ import annotations

from collections.abc import Sequence

from provisioning.access_steps import GRANT_STEPS, REVOKE_STEPS
from provisioning.actions import Action, CreateAction, DeleteAction, GrantAction, RevokeAction
from provisioning.create_steps import CREATE_STEPS
from provisioning.delete_steps import DELETE_STEPS
from provisioning.engine import Step


def steps_for(action: Action) -> Sequence[Step]:
    match action:
        case CreateAction():
            return CREATE_STEPS
        case GrantAction():
            return GRANT_STEPS
        case RevokeAction():
            return REVOKE_STEPS
        case DeleteAction():
            return DELETE_STEPS
