"""Training: trees -> SFT records and PPM preference pairs, the PPM and policy SFT trainers.

Data side (no torch needed)::

    from rstar_math.training import extract_pairs, select_sft, write_jsonl, read_pairs

    pairs = [p for tree in trees for p in extract_pairs(tree)]      # node-level PPM records
    sft = [r for tree in trees for r in select_sft(tree, k=2)]      # top-2 correct trajectories
    write_jsonl("pairs.jsonl", pairs)

Trainers (the ``train`` extra: torch + transformers), imported lazily on first use::

    from rstar_math.training import PPMTrainingConfig, train_ppm
    result = train_ppm("path/to/policy", read_pairs("pairs.jsonl"), PPMTrainingConfig(...))

File formats: ``docs/formats.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import (
    PPMTrainingConfig,
    SFTTrainingConfig,
    config_to_dict,
    load_config,
    read_config_file,
)
from .extract import extract_pairs, select_sft, subtree_outcomes
from .records import (
    JsonlWriter,
    PreferencePair,
    SFTRecord,
    import_reference_pairs,
    import_reference_sft,
    read_jsonl,
    read_pairs,
    read_sft_records,
    read_trees,
    split_step_chunks,
    write_jsonl,
)
from .reference_pairs import (
    ReferencePairs,
    ReferencePairsConfig,
    bound_names,
    reference_step_pairs,
)

if TYPE_CHECKING:
    from .ppm_trainer import (
        PPMTrainingResult,
        evaluate_pairs,
        train_ppm,
        train_ppm_from_files,
    )
    from .sft_trainer import (
        SFTTrainingResult,
        add_step_markers,
        train_sft,
        train_sft_from_files,
    )

__all__ = [
    "JsonlWriter",
    "PPMTrainingConfig",
    "PPMTrainingResult",
    "PreferencePair",
    "ReferencePairs",
    "ReferencePairsConfig",
    "SFTRecord",
    "SFTTrainingConfig",
    "SFTTrainingResult",
    "add_step_markers",
    "bound_names",
    "config_to_dict",
    "evaluate_pairs",
    "extract_pairs",
    "import_reference_pairs",
    "import_reference_sft",
    "load_config",
    "read_config_file",
    "read_jsonl",
    "read_pairs",
    "read_sft_records",
    "read_trees",
    "reference_step_pairs",
    "select_sft",
    "split_step_chunks",
    "subtree_outcomes",
    "train_ppm",
    "train_ppm_from_files",
    "train_sft",
    "train_sft_from_files",
    "write_jsonl",
]

# Names served by modules that import torch: loaded on first attribute access.
_LAZY = {
    "PPMTrainingResult": "ppm_trainer",
    "evaluate_pairs": "ppm_trainer",
    "train_ppm": "ppm_trainer",
    "train_ppm_from_files": "ppm_trainer",
    "SFTTrainingResult": "sft_trainer",
    "add_step_markers": "sft_trainer",
    "train_sft": "sft_trainer",
    "train_sft_from_files": "sft_trainer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
