"""Problem sets: loaders for common formats and the synthetic training domain."""

from rstar_math.data.loaders import (
    DatasetError,
    Problem,
    load_gsm8k,
    load_jsonl,
    load_math,
    load_problems,
    load_reference_json,
    problems_from_records,
)

__all__ = [
    "DatasetError",
    "Problem",
    "load_gsm8k",
    "load_jsonl",
    "load_math",
    "load_problems",
    "load_reference_json",
    "problems_from_records",
]
