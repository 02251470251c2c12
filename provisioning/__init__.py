"""The cloud side of kubeflow-bot: request models, state, queue, worker and steps.

Nothing here knows about Slack; ``handlers`` and ``bot`` import from here, never the
other way round (the import contract in ``pyproject.toml`` holds that).
"""
