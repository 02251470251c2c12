"""Ids of the interactive elements the bot posts, in one place.

Used by the Block Kit builders (``cards``) and by the listeners that ``bot`` registers
for them; a renamed id changes in both at once.
"""

APPROVE = "kubeflow_approve"
DENY = "kubeflow_deny"
DENY_MODAL = "kubeflow_deny_modal"
DENY_REASON_BLOCK = "deny_reason"
DENY_REASON_INPUT = "deny_reason_input"
