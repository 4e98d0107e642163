"""Scorers implementing :class:`rstar_math.interfaces.Scorer` (process preference models).

Imported lazily on first attribute access: ``import rstar_math.scorers`` never pulls in torch;
``from rstar_math.scorers import PPMScorer`` without the ``hf`` extra raises an ImportError naming
it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rstar_math.scorers.ppm import (
        PPMConfig,
        PPMModel,
        PPMOutput,
        PPMScorer,
        ppm_encode,
        ppm_text,
        squash_reward,
    )

__all__ = [
    "PPMConfig",
    "PPMModel",
    "PPMOutput",
    "PPMScorer",
    "ppm_encode",
    "ppm_text",
    "squash_reward",
]

#: public name -> module that defines it
_LAZY: dict[str, str] = {
    "PPMConfig": "rstar_math.scorers.ppm",
    "PPMModel": "rstar_math.scorers.ppm",
    "PPMOutput": "rstar_math.scorers.ppm",
    "PPMScorer": "rstar_math.scorers.ppm",
    "ppm_encode": "rstar_math.scorers.ppm",
    "ppm_text": "rstar_math.scorers.ppm",
    "squash_reward": "rstar_math.scorers.ppm",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
