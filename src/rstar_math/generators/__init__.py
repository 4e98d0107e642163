"""Policy backends implementing :class:`rstar_math.interfaces.Generator`.

Every backend is imported lazily on first attribute access, so ``import rstar_math.generators``
never pulls in torch, transformers or vllm; using a backend whose extra is missing raises an
ImportError naming the extra (``pip install 'rstar-math[hf]'``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rstar_math.generators.hf import HFGenerator
    from rstar_math.generators.openai import GenerationError, OpenAIGenerator
    from rstar_math.generators.scripted import ScriptedGenerator
    from rstar_math.generators.vllm import VLLMGenerator

__all__ = [
    "GenerationError",
    "HFGenerator",
    "OpenAIGenerator",
    "ScriptedGenerator",
    "VLLMGenerator",
]

#: public name -> module that defines it
_LAZY: dict[str, str] = {
    "HFGenerator": "rstar_math.generators.hf",
    "ScriptedGenerator": "rstar_math.generators.scripted",
    "VLLMGenerator": "rstar_math.generators.vllm",
    "OpenAIGenerator": "rstar_math.generators.openai",
    "GenerationError": "rstar_math.generators.openai",
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
