"""Everything chat-shaped: command grammar, policy checks, approval flow, messages.

``bot`` wires these to Slack or to the console; they reach the cloud side only
through ``provisioning``'s store, queue and models.
"""
