"""Lazy imports of optional heavy dependencies.

torch, transformers, vllm and ray are extras: importing ``rstar_math`` never pulls them in, and
using a feature without its extra fails with an ImportError that says which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module!r} is needed for this feature but is not installed: "
            f"pip install 'rstar-math[{extra}]'"
        ) from exc
