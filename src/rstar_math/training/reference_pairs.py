"""PPM preference pairs checked against reference solutions, one step at a time.

Why: the paper labels a step by the Q value its MCTS rollouts earn, which needs many rollouts per
problem to be reliable; a self-evolution round over a few hundred problems yields a few hundred
pairs, and a PPM trained on so few learns which *kinds* of step tend to succeed rather than
whether a step says what the question says. When training problems come with a reference code
solution (a teacher's, a dataset's), a step can be checked directly instead: at every prefix of
the reference solution the policy proposes a few next steps, each runs after the reference's
earlier steps, and a step is *right* when every name it binds is one the reference binds, with
the same value. The pairs set the reference step (and the policy's right steps) against the
policy's wrong ones at the same prefix: the policy's own mistakes, each labelled exactly.

A reference written as equations (a list ``eqs`` of sympy ``Eq`` that the steps append to and the
final step solves, as ``teacher_solution(equations=True)`` writes) binds only symbols, whose values
say nothing. Its steps are judged by what they state instead: the reference's system is solved
once, and a step that appends equations is right when each of them names only the reference's
quantities and holds at their solved values (and any symbol it declares is one the reference
declares). ``ReferencePairsConfig.equations`` names the list (``None``: never look for one).

A reference that states each sentence as an equation string (``eqs.append('ben = ann + 3')``, as
``teacher_solution(every_sentence=True)`` writes) is judged with ``statements=True``: a code step
is right when it states what the reference's step at the same place states, up to sides and a
factor; skipping, repeating or mistranslating a sentence is wrong.

A final code step is right when what it prints is the reference answer; an answer step when its
boxed answer is. Steps that bind nothing (a comment, a bare print) get no label. The result is
ordinary step-level :class:`~rstar_math.training.PreferencePair` records (``meta["source"] ==
"reference"``) that the PPM trainer takes as they are, alone or mixed with tree pairs.

Typical use::

    from rstar_math.training import ReferencePairsConfig, reference_step_pairs

    result = reference_step_pairs(records, generator, executor, ReferencePairsConfig(samples=4))
    write_jsonl("ref_pairs.jsonl", result.pairs)
"""

from __future__ import annotations

import ast
import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rstar_math.format import (
    ANSWER_START,
    CODE_END,
    STOP_MARKERS,
    Prompter,
    PromptTemplate,
    extract_boxed,
    extract_code,
    format_output,
    parse_step,
)
from rstar_math.grading import is_equivalent
from rstar_math.interfaces import ExecRequest, Executor, GenerationRequest, Generator
from rstar_math.tree import StepKind

from .records import PreferencePair, SFTRecord, split_step_chunks

__all__ = ["ReferencePairs", "ReferencePairsConfig", "bound_names", "reference_step_pairs"]

logger = logging.getLogger(__name__)

#: Prefix of the lines that report a bound name's value (never printed by a solution itself).
_BIND_MARK = "@@rstar-bind@@"
#: Prefix of the lines that report a solved equation system's values / a step's new equations.
_SOLVED_MARK = "@@rstar-solved@@"
_EQUATIONS_MARK = "@@rstar-equations@@"


@dataclass(frozen=True, slots=True)
class ReferencePairsConfig:
    """How many steps to propose at each reference prefix and how to sample them.

    ``samples``: next steps drawn from the policy at every prefix. ``temperature``/``top_p``:
    sampling (the search's defaults). ``num_pos``/``num_neg``: at most this many right / wrong
    steps per pair (the paper's 2 and 2). ``include_reference``: the reference step is the first
    positive (a pair then needs only one wrong proposal). ``batch_problems``: problems whose
    prefixes go to the generator in one call. ``equations``: the name of the list of sympy
    equations an equation-form reference builds (see the module docstring); ``None`` judges
    every step by the values it binds. ``statements``: the reference states one equation string
    per sentence (``teacher_solution(every_sentence=True)``): a code step is right when it
    states what the reference step at the same place states
    (:func:`rstar_math.data.synthetic.same_statement`), nothing run.
    """

    samples: int = 4
    temperature: float = 0.7
    top_p: float = 1.0
    max_step_tokens: int = 256
    num_pos: int = 2
    num_neg: int = 2
    include_reference: bool = True
    batch_problems: int = 64
    seed: int = 0
    equations: str | None = "eqs"
    statements: bool = False

    def __post_init__(self) -> None:
        for name in ("samples", "max_step_tokens", "num_pos", "num_neg", "batch_problems"):
            if getattr(self, name) < 1:
                raise ValueError(f"ReferencePairsConfig.{name} must be >= 1")
        if self.temperature < 0:
            raise ValueError("ReferencePairsConfig.temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("ReferencePairsConfig.top_p must be in (0, 1]")
        if self.equations is not None and not self.equations.isidentifier():
            raise ValueError(
                f"ReferencePairsConfig.equations must be a Python name or None, got "
                f"{self.equations!r}"
            )


@dataclass(slots=True)
class ReferencePairs:
    """The pairs and what the labelling saw (``right + wrong + unlabeled == proposals``)."""

    pairs: list[PreferencePair] = field(default_factory=list)
    problems: int = 0
    skipped_problems: int = 0  # reference solutions that do not run or give no answer
    prefixes: int = 0
    proposals: int = 0  # parsed (valid) proposed steps
    invalid: int = 0  # proposals without a stop marker or otherwise unusable
    right: int = 0
    wrong: int = 0
    unlabeled: int = 0

    def summary(self) -> dict[str, int]:
        return {
            "pairs": len(self.pairs),
            "problems": self.problems,
            "skipped_problems": self.skipped_problems,
            "prefixes": self.prefixes,
            "proposals": self.proposals,
            "invalid": self.invalid,
            "right": self.right,
            "wrong": self.wrong,
            "unlabeled": self.unlabeled,
        }


def bound_names(code: str) -> list[str] | None:
    """Names a step's top-level statements assign, in order (None: the code does not parse)."""
    try:
        with warnings.catch_warnings():  # model output such as "2x" warns before it fails
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(code)
    except SyntaxError:
        return None
    names: list[str] = []

    def add(target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            if target.id not in names:
                names.append(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                add(elt)

    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                add(target)
        elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
            add(stmt.target)
    return names


def _with_reports(code: str, names: Sequence[str]) -> str:
    reports = [f"print({_BIND_MARK!r}, {name!r}, repr({name}))" for name in names]
    return "\n".join([code, *reports])


def _with_solved_report(code: str, equations: str) -> str:
    """``code``, then one marked line per symbol of the solved system ``equations`` (nothing when
    it is not a list of sympy equations with exactly one solution)."""
    return "\n".join(
        [
            code,
            "import sympy as rstar_ref_sympy",
            "try:",
            f"    rstar_ref_eqs = {equations}",
            "except NameError:",
            "    rstar_ref_eqs = None",
            "if (isinstance(rstar_ref_eqs, list) and rstar_ref_eqs and all(isinstance(e,"
            " rstar_ref_sympy.Equality) for e in rstar_ref_eqs)):",
            "    rstar_ref_sol = rstar_ref_sympy.solve(rstar_ref_eqs, dict=True)",
            "    if len(rstar_ref_sol) == 1:",
            "        for rstar_ref_s, rstar_ref_v in rstar_ref_sol[0].items():",
            f"            print({_SOLVED_MARK!r}, str(rstar_ref_s), str(rstar_ref_v))",
        ]
    )


def _with_equation_check(code: str, equations: str, solved: Mapping[str, str]) -> str:
    """``code`` between two lines that count ``equations`` and one marked line after it: how
    many equations the step appended and whether all of them hold at ``solved`` (a step that
    appends something that is not an equation over the solved symbols is wrong; ``Eq(3, 3)``,
    which sympy evaluates to ``True``, states nothing and is wrong too)."""
    count = (
        f"try:\n    rstar_ref_n = len({equations})\n"
        "except (NameError, TypeError):\n    rstar_ref_n = 0"
    )
    values = "{" + ", ".join(f"{k!r}: {v!r}" for k, v in solved.items()) + "}"
    check = "\n".join(
        [
            "import sympy as rstar_ref_sympy",
            f"rstar_ref_values = {values}",
            "try:",
            f"    rstar_ref_new = list({equations})[rstar_ref_n:]",
            "except (NameError, TypeError):",
            "    rstar_ref_new = []",
            "rstar_ref_ok = all(isinstance(e, rstar_ref_sympy.Equality)"
            " and all(str(s) in rstar_ref_values for s in e.free_symbols)"
            " and bool(e.subs({s: rstar_ref_sympy.sympify(rstar_ref_values[str(s)])"
            " for s in e.free_symbols})) for e in rstar_ref_new)",
            f"print({_EQUATIONS_MARK!r}, len(rstar_ref_new), rstar_ref_ok)",
        ]
    )
    return f"{count}\n{code}\n{check}"


def _split_reports(stdout: str) -> tuple[dict[str, str], str]:
    """(name -> repr of its value, the rest of stdout). Solved-system lines are reported
    under ``_SOLVED_MARK + name``, a step's equation check under ``_EQUATIONS_MARK``."""
    values: dict[str, str] = {}
    rest: list[str] = []
    for line in stdout.splitlines(keepends=True):
        if line.startswith(_BIND_MARK + " "):
            _, name, value = line.rstrip("\n").split(" ", 2)
            values[name] = value
        elif line.startswith(_SOLVED_MARK + " "):
            _, name, value = line.rstrip("\n").split(" ", 2)
            values[_SOLVED_MARK + name] = value
        elif line.startswith(_EQUATIONS_MARK + " "):
            values[_EQUATIONS_MARK] = line.rstrip("\n").split(" ", 1)[1]
        else:
            rest.append(line)
    return values, "".join(rest)


def _same_value(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


def _chunk_kind(chunk: str) -> StepKind:
    if ANSWER_START in chunk:
        return StepKind.ANSWER
    if CODE_END in chunk:
        return StepKind.FINAL_CODE
    return StepKind.CODE


def _step_text(chunk: str, kind: StepKind) -> str:
    """A chunk as the policy writes it: a final code step without the output spliced after it."""
    if kind == StepKind.FINAL_CODE:
        return chunk[: chunk.index(CODE_END) + len(CODE_END)]
    return chunk


@dataclass(slots=True)
class _Problem:
    index: int
    question: str
    chunks: list[str]
    kinds: list[StepKind]
    answer: str
    reference: dict[str, str] = field(default_factory=dict)
    #: symbol -> value of the reference's solved equation system (empty: not equation form)
    solved: dict[str, str] = field(default_factory=dict)

    def codes_before(self, k: int) -> tuple[str, ...]:
        return tuple(
            extract_code(c)
            for c, kind in zip(self.chunks[:k], self.kinds[:k])
            if kind != StepKind.ANSWER
        )


def _as_record(item: SFTRecord | Mapping[str, Any], index: int) -> tuple[str, str]:
    if isinstance(item, SFTRecord):
        return item.question, item.response
    if not isinstance(item, Mapping):
        raise TypeError(f"reference record {index} is a {type(item).__name__}, not a mapping")
    question = item.get("question")
    solution = item.get("response", item.get("solution"))
    if not isinstance(question, str) or not isinstance(solution, str):
        raise ValueError(
            f"reference record {index} needs string 'question' and 'response' (or 'solution') "
            f"fields (keys: {sorted(item)})"
        )
    return question, solution


def _parse_problem(index: int, question: str, solution: str) -> _Problem | None:
    chunks = split_step_chunks(solution)
    kinds = [_chunk_kind(c) for c in chunks]
    answer = extract_boxed(solution)
    if answer is None or StepKind.FINAL_CODE not in kinds:
        logger.warning("reference record %d has no final code step or no boxed answer", index)
        return None
    return _Problem(index, question, chunks, kinds, answer)


def _states_the_same(code: str, p: _Problem, k: int) -> bool:
    """Whether a proposed code step states what the reference's step ``k`` states."""
    from rstar_math.data.synthetic import same_statement, stated_equations

    mine = stated_equations(code)
    theirs = stated_equations(extract_code(p.chunks[k])) if p.kinds[k] == StepKind.CODE else None
    if not mine or theirs is None or len(mine) != len(theirs):
        return False
    return all(same_statement(a, b) for a, b in zip(mine, theirs, strict=True))


def reference_step_pairs(
    records: Iterable[SFTRecord | Mapping[str, Any]],
    generator: Generator,
    executor: Executor,
    config: ReferencePairsConfig | None = None,
    prompt: Prompter | None = None,
) -> ReferencePairs:
    """Step-level PPM pairs from the policy's proposals at every prefix of reference solutions.

    ``records``: ``{"question", "response"}`` mappings or :class:`SFTRecord` s whose response is a
    complete solution in the library's format (code steps, a final code step, a boxed answer).
    ``generator``: the policy whose mistakes the PPM should learn to spot. ``prompt``: the
    template the policy and PPM see (default :meth:`PromptTemplate.sft`). A reference that does
    not run, or has no boxed answer, is skipped with a warning.
    """
    cfg = config or ReferencePairsConfig()
    template = prompt or PromptTemplate.sft()
    out = ReferencePairs()
    problems: list[_Problem] = []
    for i, item in enumerate(records):
        question, solution = _as_record(item, i)
        out.problems += 1
        parsed = _parse_problem(i, question, solution)
        if parsed is None:
            out.skipped_problems += 1
        else:
            problems.append(parsed)
    for start in range(0, len(problems), cfg.batch_problems):
        _label_batch(
            problems[start : start + cfg.batch_problems], generator, executor, cfg, template, out
        )
    logger.info("reference pairs: %s", out.summary())
    return out


def _label_batch(
    batch: list[_Problem],
    generator: Generator,
    executor: Executor,
    cfg: ReferencePairsConfig,
    template: Prompter,
    out: ReferencePairs,
) -> None:
    # 1. every value each reference solution binds
    ref_requests = []
    for p in batch:
        codes = p.codes_before(len(p.chunks))
        names = [n for code in codes for n in (bound_names(code) or [])]
        program = _with_reports("\n".join(codes), names)
        if cfg.equations is not None:
            program = _with_solved_report(program, cfg.equations)
        ref_requests.append(ExecRequest(program))
    usable: list[_Problem] = []
    for p, res in zip(batch, executor.execute_batch(ref_requests), strict=True):
        if not res.ok:
            logger.warning(
                "reference record %d does not run (%s: %s); skipped",
                p.index,
                res.error_type,
                res.error_message,
            )
            out.skipped_problems += 1
            continue
        reports, _ = _split_reports(res.stdout)
        p.solved = {
            k[len(_SOLVED_MARK) :]: v for k, v in reports.items() if k.startswith(_SOLVED_MARK)
        }
        # the equation list itself is judged by what each step appends to it, not by its value
        p.reference = {
            k: v
            for k, v in reports.items()
            if not k.startswith(_SOLVED_MARK) and (k != cfg.equations or not p.solved)
        }
        usable.append(p)

    # 2. the policy's proposals at every prefix that ends before a code step of the reference
    sites = [(p, k) for p in usable for k, kind in enumerate(p.kinds) if kind != StepKind.ANSWER]
    out.prefixes += len(sites)
    requests = [
        GenerationRequest(
            prompt=template.render(p.question) + "".join(p.chunks[:k]),
            n=cfg.samples,
            stop=STOP_MARKERS,
            max_tokens=cfg.max_step_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=cfg.seed * 1_000_003 + p.index * 101 + k,
        )
        for p, k in sites
    ]
    results = generator.generate(requests) if requests else []
    if len(results) != len(requests):
        raise RuntimeError(
            f"the generator returned {len(results)} results for {len(requests)} requests"
        )

    # 3. run each proposal after the reference's earlier steps
    proposals: list[list[tuple[StepKind, str, str | None, Any]]] = []
    exec_requests: list[ExecRequest] = []
    for (p, k), result in zip(sites, results, strict=True):
        seen: set[str] = {_step_text(p.chunks[k], p.kinds[k]).strip()}
        mine = []
        for completion in result.completions:
            step = parse_step(completion.text, completion.stop)
            if step.kind is StepKind.INVALID:
                out.invalid += 1
                continue
            key = step.text.strip()
            if key in seen:  # the reference step itself, or a duplicate proposal
                continue
            seen.add(key)
            if cfg.statements and step.kind == StepKind.CODE:
                mine.append((step.kind, step.text, step.answer, _states_the_same(step.code, p, k)))
                continue
            names = bound_names(step.code) if step.kind != StepKind.ANSWER else []
            if names and p.solved:
                names = [n for n in names if n != cfg.equations]
            mine.append((step.kind, step.text, step.answer, names))
            if step.kind != StepKind.ANSWER:
                program = _with_reports(step.code, names or [])
                if p.solved and cfg.equations is not None and step.kind == StepKind.CODE:
                    program = _with_equation_check(program, cfg.equations, p.solved)
                exec_requests.append(ExecRequest(program, p.codes_before(k)))
        proposals.append(mine)
    exec_results = iter(executor.execute_batch(exec_requests) if exec_requests else [])

    # 4. label and pair
    for (p, k), mine in zip(sites, proposals, strict=True):
        right: list[str] = [p.chunks[k]] if cfg.include_reference else []
        wrong: list[str] = []
        for kind, text, answer, names in mine:
            out.proposals += 1
            verdict: bool | None
            chunk = text
            if kind == StepKind.ANSWER:
                verdict = answer is not None and is_equivalent(answer, p.answer)
            elif isinstance(names, bool):  # judged by its statement (cfg.statements)
                verdict = names
            else:
                res = next(exec_results)
                values, printed = _split_reports(res.stdout) if res.ok else ({}, "")
                if kind == StepKind.FINAL_CODE:
                    # as in a search tree's chunks: the output block follows a final code step,
                    # empty when it failed (the reference's earlier steps print nothing of it:
                    # an executor reports only the stdout of the step itself)
                    chunk = text + format_output(printed)
                if not res.ok or names is None:
                    verdict = False
                elif kind == StepKind.FINAL_CODE:
                    last = printed.strip().splitlines()[-1:]
                    verdict = bool(last) and is_equivalent(last[0], p.answer)
                else:
                    appended, holds = values.get(_EQUATIONS_MARK, "0 True").split(" ")
                    binds_right = all(
                        n in p.reference and n in values and _same_value(values[n], p.reference[n])
                        for n in names
                    )
                    if int(appended) > 0:
                        verdict = holds == "True" and binds_right
                    elif not names:
                        verdict = None
                    else:
                        verdict = binds_right
            if verdict is None:
                out.unlabeled += 1
            elif verdict:
                out.right += 1
                right.append(chunk)
            else:
                out.wrong += 1
                wrong.append(chunk)
        if right and wrong:
            out.pairs.append(
                PreferencePair(
                    question=p.question,
                    prefix_steps=list(p.chunks[:k]),
                    pos=right[: cfg.num_pos],
                    neg=wrong[: cfg.num_neg],
                    level="step",
                    meta={"source": "reference", "record": p.index, "step": k},
                )
            )
