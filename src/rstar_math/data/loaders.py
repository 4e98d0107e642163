"""Problem sets: the reference's JSON, GSM8K and MATH JSONL, plain JSONL, lists and HF datasets.

Everything becomes a list of :class:`Problem` (id, question, answer). A malformed record raises a
:class:`DatasetError` that names the file, the line (or index) and the field, so a typo in record
40,000 of a file is found at once, not as a crash halfway through a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


class DatasetError(ValueError):
    """A record of a problem file is malformed."""


@dataclass(frozen=True)
class Problem:
    """One problem: a stable id (used to resume runs), the question and its reference answer."""

    id: str
    question: str
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _where(source: str, line: int | None) -> str:
    return f"{source}, line {line}" if line is not None else source


def _field(record: Any, name: str, source: str, line: int | None, required: bool = True) -> Any:
    if not isinstance(record, Mapping):
        raise DatasetError(
            f"{_where(source, line)}: expected a JSON object, got {type(record).__name__}"
        )
    if name not in record or record[name] is None:
        if required:
            raise DatasetError(f"{_where(source, line)}: missing the field {name!r}")
        return None
    value = record[name]
    if name != "index" and not isinstance(value, str | int | float):
        raise DatasetError(
            f"{_where(source, line)}: field {name!r} must be a string or number, "
            f"got {type(value).__name__}"
        )
    return value


def _read_jsonl(path: Path) -> Iterable[tuple[int, Any]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                yield lineno, json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}, line {lineno}: invalid JSON ({exc.msg})") from exc


def _question(value: Any, source: str, line: int | None, name: str) -> str:
    text = str(value).strip()
    if not text:
        raise DatasetError(f"{_where(source, line)}: field {name!r} is empty")
    return text


def load_reference_json(path: str | Path) -> list[Problem]:
    """The reference's test sets: a JSON list of ``{index, question, answer}``."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(records, list):
        raise DatasetError(f"{path}: expected a JSON list of records")
    out = []
    for i, rec in enumerate(records):
        src = f"{path} (record {i})"
        q = _question(_field(rec, "question", src, None), src, None, "question")
        a = _field(rec, "answer", src, None)
        idx = rec.get("index", i)
        out.append(Problem(id=str(idx), question=q, answer=str(a)))
    return out


def load_jsonl(
    path: str | Path, question_field: str = "question", answer_field: str = "answer"
) -> list[Problem]:
    """Plain JSONL of ``{question, answer}`` (field names configurable; ``id`` used if present)."""
    path = Path(path)
    out = []
    for lineno, rec in _read_jsonl(path):
        q = _question(
            _field(rec, question_field, str(path), lineno), str(path), lineno, question_field
        )
        a = _field(rec, answer_field, str(path), lineno, required=False)
        pid = rec.get("id", rec.get("index", lineno))
        out.append(Problem(id=str(pid), question=q, answer=None if a is None else str(a)))
    return out


def load_gsm8k(path: str | Path) -> list[Problem]:
    """GSM8K JSONL: the answer is what follows ``####`` in the ``answer`` field."""
    path = Path(path)
    out = []
    for lineno, rec in _read_jsonl(path):
        q = _question(_field(rec, "question", str(path), lineno), str(path), lineno, "question")
        raw = str(_field(rec, "answer", str(path), lineno))
        if "####" not in raw:
            raise DatasetError(f"{path}, line {lineno}: field 'answer' has no '#### <answer>' part")
        answer = raw.rsplit("####", 1)[1].strip().replace(",", "")
        out.append(Problem(id=str(rec.get("id", lineno)), question=q, answer=answer))
    return out


def load_math(path: str | Path) -> list[Problem]:
    """MATH JSONL (``{problem, solution}``): the answer is the solution's last ``\\boxed{}``."""
    from rstar_math.grading import last_boxed

    path = Path(path)
    out = []
    for lineno, rec in _read_jsonl(path):
        q = _question(_field(rec, "problem", str(path), lineno), str(path), lineno, "problem")
        answer = rec.get("answer")
        if answer is None:
            solution = str(_field(rec, "solution", str(path), lineno))
            answer = last_boxed(solution)
            if answer is None:
                raise DatasetError(
                    f"{path}, line {lineno}: field 'solution' has no \\boxed{{}} answer"
                )
        pid = rec.get("unique_id", rec.get("id", lineno))
        out.append(Problem(id=str(pid), question=q, answer=str(answer)))
    return out


def problems_from_records(
    records: Iterable[Mapping[str, Any]] | Any,
    question_field: str = "question",
    answer_field: str = "answer",
    source: str = "records",
) -> list[Problem]:
    """A list of dicts, or a Hugging Face ``datasets.Dataset`` (iterated the same way)."""
    out = []
    for i, rec in enumerate(records):
        src = f"{source}[{i}]"
        q = _question(_field(rec, question_field, src, None), src, None, question_field)
        a = _field(rec, answer_field, src, None, required=False)
        pid = rec.get("id", rec.get("index", i))
        out.append(Problem(id=str(pid), question=q, answer=None if a is None else str(a)))
    return out


def load_problems(
    source: str | Path | Iterable[Mapping[str, Any]], fmt: str = "auto"
) -> list[Problem]:
    """Load problems from a file (format by ``fmt`` or guessed) or from in-memory records.

    ``fmt``: ``auto``, ``reference`` (JSON list), ``gsm8k``, ``math``, ``jsonl``.
    """
    if not isinstance(source, str | Path):
        return problems_from_records(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no problem file at {path}")
    if fmt == "auto":
        if path.suffix == ".json":
            fmt = "reference"
        else:
            first = next(iter(_read_jsonl(path)), (0, {}))[1]
            if isinstance(first, Mapping) and "problem" in first:
                fmt = "math"
            elif isinstance(first, Mapping) and "####" in str(first.get("answer", "")):
                fmt = "gsm8k"
            else:
                fmt = "jsonl"
    loaders = {
        "reference": load_reference_json,
        "gsm8k": load_gsm8k,
        "math": load_math,
        "jsonl": load_jsonl,
    }
    if fmt not in loaders:
        raise ValueError(f"unknown problem format {fmt!r}; choose one of {sorted(loaders)}")
    return loaders[fmt](path)
