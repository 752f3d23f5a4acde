"""Let the tests run from a checkout where omniq-acme is not installed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("omniq_acme") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
