"""Shared pytest setup: make the test helpers importable and keep hypothesis quick."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

settings.register_profile(
    "heatshift",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("heatshift")
