"""contrib/ scripts, which are no package, imported by the tests that check them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


def load_script(relative: str, name: str) -> ModuleType:
    """``contrib/<relative>`` as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, CONTRIB / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
