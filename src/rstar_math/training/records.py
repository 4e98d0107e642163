"""Training records and their on-disk formats.

Three record types travel between the search, the trainers and the disk, each as one JSON object
per line (JSONL), documented with examples in ``docs/formats.md``:

* trees (:class:`rstar_math.tree.Tree`, ``Tree.to_dict()``): the raw output of a search;
* :class:`SFTRecord`: one policy fine-tuning example, a question and a solution written in the
  code-augmented CoT format;
* :class:`PreferencePair`: one PPM training record *per tree node*: the shared prefix (question +
  steps so far) and the lists of preferred and dispreferred continuations; the Bradley-Terry loss
  runs over every ``pos x neg`` combination.

Readers are generators and writers write and flush whole lines, so a file of a million records
streams through constant memory and a crashed writer leaves at most one partial last line, which
an appending writer cuts off before it continues. ``.gz`` paths are compressed transparently.

Importers read the reference implementation's released formats: SFT ``{query, response}`` and
PPM ``{prompt, pos, neg}`` (:func:`import_reference_sft`, :func:`import_reference_pairs`).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from rstar_math.format import ANSWER_END, CODE_END, OUTPUT_END, STEP_END
from rstar_math.tree import Tree

__all__ = [
    "REFERENCE_ASSISTANT_HEADER",
    "REFERENCE_USER_PREFIX",
    "JsonlWriter",
    "PreferencePair",
    "SFTRecord",
    "import_reference_pairs",
    "import_reference_sft",
    "read_jsonl",
    "read_pairs",
    "read_sft_records",
    "read_trees",
    "split_step_chunks",
    "write_jsonl",
]

logger = logging.getLogger(__name__)

PairLevel = Literal["step", "answer"]

#: How the reference's prompts open (``<|user|>:\n{question}``).
REFERENCE_USER_PREFIX = "<|user|>:\n"
#: What follows the question in the reference's SFT prompt; the solution starts after it.
REFERENCE_ASSISTANT_HEADER = (
    "\n<|assistant|>: Let's think step by step and solve the problem with code."
)


# --------------------------------------------------------------------------- records


@dataclass
class SFTRecord:
    """One policy fine-tuning example.

    ``response`` is a whole solution in the code-augmented CoT format, exactly the text the policy
    should write after the prompt (``"".join(step_chunks(path))`` for a tree trajectory). The
    prompt is not stored: the trainer renders ``question`` through its prompt template.
    """

    question: str
    response: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not isinstance(self.response, str):
            raise TypeError("SFTRecord.question and SFTRecord.response must be str")

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "response": self.response, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SFTRecord:
        _check_keys(data, ("question", "response"), cls.__name__)
        return cls(data["question"], data["response"], dict(data.get("meta") or {}))


@dataclass
class PreferencePair:
    """The PPM training record of one tree node: a shared prefix and ranked continuations.

    The text scored for a continuation ``c`` is ``prompt.render(question) + "".join(prefix_steps)
    + c`` (what :class:`~rstar_math.interfaces.ScoreRequest` ``(question, (*prefix_steps, c))``
    scores at inference). ``pos`` and ``neg`` hold whole continuation texts:

    * ``level="step"``: each is one next step (the chunk :func:`~rstar_math.format.step_chunks`
      gives it: full step text with its marker, a final code step with its ``<output>`` block);
    * ``level="answer"``: ``prefix_steps`` is empty and each is a whole solution.

    The loss is averaged over all ``len(pos) * len(neg)`` combinations. ``meta`` carries
    provenance (Q values ``pos_q``/``neg_q``, node id, ...).
    """

    question: str
    prefix_steps: list[str]
    pos: list[str]
    neg: list[str]
    level: PairLevel = "step"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("prefix_steps", "pos", "neg"):
            value = getattr(self, name)
            if isinstance(value, str):  # a single continuation given bare
                value = [value]
            value = list(value)
            if not all(isinstance(v, str) for v in value):
                raise TypeError(f"PreferencePair.{name} must be a list of str")
            setattr(self, name, value)
        if not self.pos or not self.neg:
            raise ValueError("a PreferencePair needs at least one positive and one negative")
        if self.level not in ("step", "answer"):
            raise ValueError(f"PreferencePair.level must be 'step' or 'answer', got {self.level!r}")

    @property
    def num_combos(self) -> int:
        return len(self.pos) * len(self.neg)

    @property
    def prefix(self) -> str:
        return "".join(self.prefix_steps)

    def combos(self) -> list[tuple[str, str]]:
        """Every ``(positive, negative)`` continuation pair."""
        return [(p, n) for p in self.pos for n in self.neg]

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "prefix_steps": list(self.prefix_steps),
            "pos": list(self.pos),
            "neg": list(self.neg),
            "level": self.level,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreferencePair:
        _check_keys(data, ("question", "pos", "neg"), cls.__name__)
        return cls(
            question=data["question"],
            prefix_steps=list(data.get("prefix_steps") or []),
            pos=data["pos"],
            neg=data["neg"],
            level=data.get("level", "step"),
            meta=dict(data.get("meta") or {}),
        )


def _check_keys(data: Any, required: Sequence[str], what: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"a {what} record must be a JSON object, got {type(data).__name__}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"a {what} record is missing the field(s) {', '.join(map(repr, missing))}")


# --------------------------------------------------------------------------- JSONL


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, mode + "b"), encoding="utf-8", newline="\n")
    return open(path, mode, encoding="utf-8", newline="\n")


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the JSON object of every non-blank line of ``path``, one at a time.

    A malformed line raises a ValueError naming the file and line number.
    """
    path = Path(path)
    with _open_text(path, "r") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc


def _to_dict(record: Any) -> dict[str, Any]:
    if isinstance(record, dict):
        return record
    to_dict = getattr(record, "to_dict", None)
    if to_dict is None:
        raise TypeError(f"cannot write a {type(record).__name__} as JSONL (no to_dict())")
    return to_dict()


def _truncate_partial_line(path: Path) -> None:
    """Cut a trailing line without its newline (a write interrupted by a crash)."""
    with open(path, "rb+") as fh:
        end = fh.seek(0, os.SEEK_END)
        if end == 0:
            return
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return
        pos = end
        chunk = 1 << 16
        while pos > 0:  # find the last newline
            start = max(0, pos - chunk)
            fh.seek(start)
            data = fh.read(pos - start)
            idx = data.rfind(b"\n")
            if idx != -1:
                cut = start + idx + 1
                break
            pos = start
        else:
            cut = 0
        logger.warning("%s: dropping an incomplete last line (%d bytes)", path, end - cut)
        fh.truncate(cut)


class JsonlWriter:
    """Write records (dicts or objects with ``to_dict()``) as JSONL, one whole line at a time.

    Each :meth:`write` serialises the record first and then writes the complete line in one call
    and flushes, so a crash never leaves a half-written record behind a complete one. With
    ``append=True`` an existing file is continued; an incomplete last line left by a crash is cut
    off first (logged). Use as a context manager.
    """

    def __init__(
        self, path: str | os.PathLike[str], append: bool = False, flush_every: int = 1
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append and self.path.exists() and self.path.suffix != ".gz":
            _truncate_partial_line(self.path)
        self._fh: IO[str] | None = _open_text(self.path, "a" if append else "w")
        self._flush_every = max(1, int(flush_every))
        self.count = 0

    def write(self, record: Any) -> None:
        if self._fh is None:
            raise ValueError(f"JsonlWriter for {self.path} is closed")
        line = json.dumps(_to_dict(record), ensure_ascii=False) + "\n"
        self._fh.write(line)
        self.count += 1
        if self.count % self._flush_every == 0:
            self._fh.flush()

    def write_all(self, records: Iterable[Any]) -> int:
        n = 0
        for record in records:
            self.write(record)
            n += 1
        return n

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            self._fh.close()
            self._fh = None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Any], append: bool = False) -> int:
    """Stream ``records`` to ``path`` as JSONL; returns how many were written."""
    with JsonlWriter(path, append=append) as writer:
        return writer.write_all(records)


def read_sft_records(path: str | os.PathLike[str]) -> Iterator[SFTRecord]:
    """Stream :class:`SFTRecord` objects from a JSONL file."""
    for data in read_jsonl(path):
        yield SFTRecord.from_dict(data)


def read_pairs(path: str | os.PathLike[str]) -> Iterator[PreferencePair]:
    """Stream :class:`PreferencePair` objects from a JSONL file."""
    for data in read_jsonl(path):
        yield PreferencePair.from_dict(data)


def read_trees(path: str | os.PathLike[str]) -> Iterator[Tree]:
    """Stream :class:`~rstar_math.tree.Tree` objects from a JSONL file (one ``to_dict`` a line)."""
    for data in read_jsonl(path):
        yield Tree.from_dict(data)


# --------------------------------------------------------------------------- reference formats


def _iter_json_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON array file (loaded whole) or a JSONL file (streamed)."""
    with _open_text(path, "r") as fh:
        head = fh.read(4096).lstrip()
    if head.startswith("["):
        with _open_text(path, "r") as fh:
            data = json.load(fh)
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise ValueError(f"{path}: item {i} is not a JSON object")
            yield item
    else:
        yield from read_jsonl(path)


def import_reference_sft(path: str | os.PathLike[str]) -> Iterator[SFTRecord]:
    """Read the reference's SFT data (``[{"query": ..., "response": ...}, ...]`` or JSONL).

    The response is kept verbatim (it is already in the code-augmented CoT format).
    """
    path = Path(path)
    for i, item in enumerate(_iter_json_records(path)):
        if "query" not in item or "response" not in item:
            raise ValueError(f"{path}: record {i} lacks 'query'/'response' (keys: {sorted(item)})")
        meta = {k: v for k, v in item.items() if k not in ("query", "response")}
        meta.setdefault("source", str(path.name))
        yield SFTRecord(item["query"], item["response"], meta)


_CHUNK_ENDS = (STEP_END, CODE_END, ANSWER_END)


def split_step_chunks(text: str) -> list[str]:
    """Split solution text into step chunks without losing a character.

    Chunks end right after ``<end_of_step>``, ``<end_of_answer>`` or a final code step's output
    block (``<end_of_code>`` ... ``<end_of_output>`` and the whitespace after it), like
    :func:`~rstar_math.format.step_chunks`; ``"".join(split_step_chunks(t)) == t`` always, and
    trailing text without a marker becomes a last chunk of its own.
    """
    chunks: list[str] = []
    pos = 0
    n = len(text)
    while pos < n:
        best = -1
        best_marker = ""
        for marker in _CHUNK_ENDS:
            idx = text.find(marker, pos)
            if idx != -1 and (best == -1 or idx < best):
                best, best_marker = idx, marker
        if best == -1:
            chunks.append(text[pos:])
            break
        end = best + len(best_marker)
        if best_marker == CODE_END:
            out_end = text.find(OUTPUT_END, end)
            # the output block belongs to the final code step when it follows directly
            if out_end != -1 and not any(text.find(m, end, out_end) != -1 for m in _CHUNK_ENDS):
                end = out_end + len(OUTPUT_END)
                while end < n and text[end] in "\n ":
                    end += 1
        chunks.append(text[pos:end])
        pos = end
    return chunks


def import_reference_pairs(
    path: str | os.PathLike[str],
    group: bool = True,
    user_prefix: str = REFERENCE_USER_PREFIX,
    assistant_header: str = REFERENCE_ASSISTANT_HEADER,
) -> Iterator[PreferencePair]:
    """Read the reference's PPM pairs (``[{"prompt", "pos", "neg", ...}, ...]`` or JSONL).

    Each reference record is one (pos, neg) combination of raw text. Its ``prompt`` is
    ``<|user|>:\\n{question}``, followed, for step-level pairs, by the assistant header and the
    steps so far; for whole-solution pairs the header opens ``pos``/``neg`` instead. The importer
    recovers ``question``, ``prefix_steps`` (split with :func:`split_step_chunks`) and the
    continuations with the header removed, so the pairs render through the library's own prompt
    template (``PromptTemplate.sft()``) exactly as the PPM sees text at inference.

    With ``group=True`` consecutive records with the same prompt become one node-level pair
    (distinct positives x distinct negatives, in first-seen order), which is how the reference
    writes the combinations of a node; other fields (``pos_count``...) go to ``meta``.
    """
    path = Path(path)
    pending: PreferencePair | None = None
    pending_prompt: str | None = None
    for i, item in enumerate(_iter_json_records(path)):
        for key in ("prompt", "pos", "neg"):
            if key not in item or not isinstance(item[key], str):
                raise ValueError(
                    f"{path}: record {i} lacks a string {key!r} (keys: {sorted(item)})"
                )
        prompt, pos, neg = item["prompt"], item["pos"], item["neg"]
        if group and pending is not None and prompt == pending_prompt:
            pos_c = _strip_header(pos, assistant_header)
            neg_c = _strip_header(neg, assistant_header)
            if pos_c not in pending.pos:
                pending.pos.append(pos_c)
            if neg_c not in pending.neg:
                pending.neg.append(neg_c)
            pending.meta["records"] = pending.meta.get("records", 1) + 1
            continue
        if pending is not None:
            yield pending
        pending = _reference_pair(path, i, item, user_prefix, assistant_header)
        pending_prompt = prompt
    if pending is not None:
        yield pending


def _strip_header(text: str, header: str) -> str:
    return text[len(header) :] if header and text.startswith(header) else text


def _reference_pair(
    path: Path, index: int, item: dict[str, Any], user_prefix: str, header: str
) -> PreferencePair:
    prompt, pos, neg = item["prompt"], item["pos"], item["neg"]
    body = prompt[len(user_prefix) :] if prompt.startswith(user_prefix) else prompt
    cut = body.find(header) if header else -1
    if cut != -1:
        question = body[:cut]
        prefix = body[cut + len(header) :]
        level: PairLevel = "step"
    else:
        question = body
        prefix = ""
        if not (pos.startswith(header) and neg.startswith(header)):
            logger.debug("%s: record %d: assistant header not found", path, index)
        level = "answer"
    meta = {k: v for k, v in item.items() if k not in ("prompt", "pos", "neg")}
    meta["source"] = path.name
    meta["index"] = index
    return PreferencePair(
        question=question,
        prefix_steps=split_step_chunks(prefix) if prefix else [],
        pos=[_strip_header(pos, header)],
        neg=[_strip_header(neg, header)],
        level=level,
        meta=meta,
    )
