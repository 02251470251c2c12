"""Where things are, for tests: the repository root, the sample policy, the console script."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE_POLICY = REPO / "policy.example.yaml"
SHARED_DATA = REPO.parent / "shared" / "data"
CONSOLE_SCRIPT = Path(sys.executable).parent / "kubeflow-bot"
