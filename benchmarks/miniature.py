"""The built-in miniature model on its synthetic domain: does the rStar-Math method work?

Measures, on the validation split (levels 1-3, the training distribution) and the held-out hard
split (8-9 reasoning steps, more than any training problem):

* accuracy of the final policy with greedy decoding, majority@8 and best-of-8 by PPM (8 sampled
  trajectories), step-level beam search with the PPM, MCTS without the PPM (answer by majority
  vote over its trajectories) and MCTS with the PPM (answer with the highest PPM value), and, at
  the budget matched to MCTS's (about as many generated step candidates), majority@32 and
  best-of-32 by PPM (one set of 32 samples per problem, both selections); with the generated step
  candidates and tokens per problem of each, so the search budgets can be compared;
* an upper bound, not a method: MCTS + PPM with a judge that knows the teacher's steps in the
  PPM's place (:class:`TeacherOracle`; row "MCTS + oracle"), i.e. what a perfect PPM could make
  of the policy's candidates at the same budget;
* with ``--judge-lm DIR``, another reference, not a method: MCTS guided by how likely a causal
  LM (e.g. a larger policy of the same domain) finds each step (:class:`StepLikelihoodJudge`;
  row "MCTS + LM judge"), and that judge's pair accuracy next to the PPMs': whether the
  knowledge a PPM needs is in a model of that size at all;
* each self-evolution round's policy on validation: greedy and MCTS without a PPM;
* the PPM's pair accuracy on preference pairs from terminal-guided trees of *validation*
  problems (never trained on), for every round's PPM, next to a reference oracle that knows the
  teacher's steps (how far the labels themselves let a judge of step correctness go);
* whether each PPM reads the question at all: teacher steps that add ("more") or subtract
  ("fewer") against the same step with sign and word flipped (:func:`relation_flip_pairs`);
* seconds and generated tokens per problem, and the rebuild time from ``build.json``.

Targets (issue 7): MCTS+PPM beats greedy by >= 25 points and majority@8 by >= 10 points on hard;
each round's policy >= the previous one on validation (greedy and MCTS); PPM pair accuracy
>= 85%; full rebuild < 2 h.

Run (after ``python scripts/build_miniature.py``)::

    python benchmarks/miniature.py                       # 100 val + 50 hard problems
    python benchmarks/miniature.py --n 30 --no-write     # quick look, nothing appended
    python benchmarks/miniature.py --run-dir R --policy R/evolution/round_2/policy/final \\
        --ppm R/evolution/round_2/ppm/final              # a build not (yet) installed
    python benchmarks/miniature.py --policy P --methods greedy,MCTS --skip-pairs --skip-rounds
                                                         # a policy alone (no PPM methods)
    python benchmarks/miniature.py --policy P --methods "greedy,MCTS + oracle" --skip-pairs \
        --skip-rounds --rollouts 16 --temperature 1.0    # a perfect judge at a larger budget
    python benchmarks/miniature.py --policy P --ppm Q --judge-lm BIGGER_POLICY
                                                         # what a larger LM's likelihood knows

The measurements run as independent jobs on ``--jobs`` worker processes (default 2, one torch
thread each), so the seconds per problem are those of a machine that is running two searches at
once. Results are appended to ``docs/benchmarks.md`` and written as JSON to
``RUN/benchmark.json`` (``RUN`` = ``--run-dir``, default ``build/miniature``); each job's result
is cached in ``RUN/benchmark_cache`` under a hash of its models' weights, search and problems, so
an interrupted benchmark resumes and a changed model is measured again (a cached job keeps the
timings of the run that measured it). ``--render-only`` re-renders ``RUN/benchmark.json``.
A ``--no-write`` run (a side measurement) leaves both the docs and ``RUN/benchmark.json`` alone
and writes its JSON to ``RUN/benchmark.scratch.json`` instead; ``--json PATH`` names the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import append_section

REPO = Path(__file__).resolve().parents[1]

#: Search budgets. Sampling methods draw 8 full trajectories; beam search keeps 2 beams that
#: each sample 4 steps per depth (8 candidates per depth); MCTS runs 8 rollouts that sample 4
#: candidates per expansion (a rollout only expands the leaves it reaches, so it generates about
#: as many step candidates per problem as 8 independent trajectories; the table reports them).
#: The row of the reference's wide test-time search (see METHODS).
WIDE = "MCTS + PPM (1 rollout x 32 at T 1.0)"
METHODS: dict[str, dict[str, Any]] = {
    "greedy": {"algorithm": "greedy"},
    "majority@8": {"algorithm": "best_of_n", "num_samples": 8, "answer_selection": "majority"},
    "best-of-8 (PPM)": {"algorithm": "best_of_n", "num_samples": 8, "answer_selection": "best"},
    "beam (PPM)": {
        "algorithm": "beam",
        "beam_width": 2,
        "beam_expand": 4,
        "answer_selection": "best",
    },
    # Without a PPM (and, at test time, without a reference) every terminal is worth 0, so UCT
    # must try unvisited children first or it would keep re-selecting its first path.
    "MCTS": {
        "algorithm": "mcts",
        "num_rollouts": 8,
        "num_candidates": 4,
        "unvisited": "inf",
        "answer_selection": "majority",
    },
    "MCTS + PPM": {
        "algorithm": "mcts",
        "num_rollouts": 8,
        "num_candidates": 4,
        "answer_selection": "best",
    },
    # An upper bound, not a method: MCTS + PPM with a judge that knows the teacher's steps in
    # the PPM's place (TeacherOracle): how far a perfect PPM could take this policy
    "MCTS + oracle": {
        "algorithm": "mcts",
        "num_rollouts": 8,
        "num_candidates": 4,
        "answer_selection": "best",
    },
    # The reference implementation's test-time shape (32 candidates per expansion at
    # temperature 1.0): each rollout expands every new step it reaches 32 ways and the PPM's
    # values pick the way on. One rollout generates about as many step candidates as 32 sampled
    # trajectories, so it is measured against the matched-budget rows (majority@32,
    # best-of-32). Its temperature and rollouts are part of what it is: --temperature and
    # --rollouts leave them alone ("pinned").
    WIDE: {
        "algorithm": "mcts",
        "num_rollouts": 1,
        "num_candidates": 32,
        "temperature": 1.0,
        "answer_selection": "best",
        "pinned": ["temperature", "num_rollouts"],
    },
    # A reference, not a method (only with --judge-lm): MCTS + PPM with StepLikelihoodJudge in
    # the PPM's place, how far a judge that knows what a larger LM knows takes this policy
    "MCTS + LM judge": {
        "algorithm": "mcts",
        "num_rollouts": 8,
        "num_candidates": 4,
        "answer_selection": "best",
    },
    # The matched budget: MCTS 8 x 4 generates about as many step candidates as 32 sampled
    # trajectories. One job samples them and selects the answer both ways (DERIVED).
    "best-of-32 (PPM)": {"algorithm": "best_of_n", "num_samples": 32, "answer_selection": "best"},
}
USES_PPM = {"best-of-8 (PPM)", "beam (PPM)", "MCTS + PPM", "best-of-32 (PPM)", WIDE}
#: Methods scored by TeacherOracle instead of the PPM.
USES_ORACLE = {"MCTS + oracle"}
#: Methods scored by StepLikelihoodJudge (planned only when --judge-lm names its LM).
USES_JUDGE = {"MCTS + LM judge"}
#: Rows computed from another method's trajectories with a different answer selection:
#: row -> (method whose trajectories it uses, selection). Majority ties go to the PPM's choice.
DERIVED: dict[str, tuple[str, str]] = {"majority@32": ("best-of-32 (PPM)", "majority")}
#: Table order: the issue's 8-trajectory budget, then the matched (~32 trajectories) budget.
ROWS = (
    "greedy",
    "majority@8",
    "best-of-8 (PPM)",
    "beam (PPM)",
    "majority@32",
    "best-of-32 (PPM)",
    "MCTS",
    "MCTS + PPM",
    "MCTS + oracle",
    "MCTS + LM judge",
    WIDE,
)
#: The pair-accuracy row of a judge that knows the reference solutions (see reference_oracle).
ORACLE = "reference oracle (knows the teacher's steps)"
#: The pair-accuracy row of StepLikelihoodJudge (with --judge-lm).
JUDGE = "LM judge (likelihood of each step, --judge-lm; step pairs only)"
#: Shared by every method; the built-in model's search (rstar_math.models.builtin) uses the same.
COMMON = {"temperature": 0.7, "max_depth": 16, "max_step_tokens": 256, "c_puct": 2.0}


def search(
    method: dict[str, Any], temperature: float | None = None, rollouts: int | None = None
) -> dict[str, Any]:
    """A method's complete search settings (what a job runs, and part of its cache key).

    ``temperature`` replaces the sampling temperature of every method, ``rollouts`` the MCTS
    methods' number of rollouts (the issue's budget is 8): how much a perfect judge could buy
    grows with both, and the benchmark measures it at more than the default budget this way.
    A method's ``pinned`` fields (the wide search's temperature and rollouts) keep their values.
    """
    out = {**COMMON, **method}
    pinned = set(out.pop("pinned", ()))
    if temperature is not None and "temperature" not in pinned:
        out["temperature"] = temperature
    if rollouts is not None and out["algorithm"] == "mcts" and "num_rollouts" not in pinned:
        out["num_rollouts"] = rollouts
    return out


def load_split(run: Path, name: str, n: int) -> list[dict[str, Any]]:
    """The first ``n`` problems of the build's ``name`` split (``RUN/data/<name>.jsonl``).

    The validation split is only disjoint from the training problems of the build that wrote
    it, so it is read from the run directory, never regenerated. Validation problems the
    build's acceptance check chose policies on (``RUN/data/select.jsonl``) are left out.
    """
    path = run / "data" / f"{name}.jsonl"
    if not path.is_file():
        raise SystemExit(
            f"{path} not found: give --run-dir the directory scripts/build_miniature.py built in"
        )
    rows = [json.loads(line) for line in path.open() if line.strip()]
    select = run / "data" / "select.jsonl"
    if name == "val" and select.is_file():
        chosen_on = {json.loads(line)["question"] for line in select.open() if line.strip()}
        rows = [row for row in rows if row["question"] not in chosen_on]
    return rows[:n]


def evaluate_method(
    generator: Any,
    scorer: Any,
    executor: Any,
    problems: list[dict[str, Any]],
    search: dict[str, Any],
    seed: int,
    derived: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Accuracy, budget and time of one search method on ``problems``; ``derived`` maps a row
    name to another answer selection applied to the same trajectories."""
    from rstar_math import MCTSSolver, SearchConfig
    from rstar_math.grading import is_equivalent
    from rstar_math.search.selection import select_answer

    config = SearchConfig.from_dict({**search, "seed": seed})
    solver = MCTSSolver(generator, scorer=scorer, executor=executor, config=config)
    t0 = time.perf_counter()
    results = solver.solve_batch([p["question"] for p in problems])
    seconds = time.perf_counter() - t0
    correct = any_correct = 0
    tokens = candidates = 0
    expansions = distinct_children = 0
    derived_correct = dict.fromkeys(derived or {}, 0)
    for r, p in zip(results, problems):
        ok = r.answer is not None and is_equivalent(r.answer, p["answer"])
        correct += ok
        for row, selection in (derived or {}).items():
            answer, _ = select_answer(r.trajectories, selection, config.vote_top_k)
            derived_correct[row] += answer is not None and is_equivalent(answer, p["answer"])
        any_correct += any(
            t.answer is not None and is_equivalent(t.answer, p["answer"]) for t in r.trajectories
        )
        tokens += r.stats.get("generated_tokens", 0)
        candidates += r.stats.get("candidates", 0)
        # identical candidates are merged into one node: a search whose expansions all have
        # one child grew a single path, whatever its budget
        for node in r.tree:
            if node.children:
                expansions += 1
                distinct_children += len(node.children)
    n = max(len(problems), 1)
    batch = results[0].stats.get("batch", {}) if results else {}
    return {
        "accuracy": correct / n,
        "pass_any": any_correct / n,
        "candidates_per_problem": candidates / n,
        "tokens_per_problem": tokens / n,
        "distinct_children_per_expansion": distinct_children / expansions if expansions else None,
        "seconds_per_problem": seconds / n,
        "time_generate_s": batch.get("time_generate_s"),
        "time_execute_s": batch.get("time_execute_s"),
        "time_score_s": batch.get("time_score_s"),
        "n": len(problems),
        "derived": {row: {"accuracy": c / n} for row, c in derived_correct.items()},
    }


def round_models(run: Path) -> list[tuple[str, str, str | None]]:
    """(name, policy dir, ppm dir or None) of every round, from the run directory.

    A round whose trained policy the acceptance check rejected ends with the policy it kept:
    that is the round's policy, and its name says so.
    """
    out: list[tuple[str, str, str | None]] = []
    r1 = run / "sft_r1" / "final"
    if r1.exists():
        out.append(("round 1 (SFT on teacher solutions)", str(r1), None))
    manifest = run / "evolution" / "manifest.json"
    if manifest.exists():
        rounds = json.loads(manifest.read_text())["rounds"]
        for key in sorted(rounds, key=lambda k: int(k.split("_")[1])):
            stages = rounds[key]["stages"]
            policy = stages.get("train_sft", {}).get("model_dir")
            ppm = stages.get("train_ppm", {}).get("model_dir")
            number = int(key.split("_")[1]) + 1
            kind = "terminal-guided MCTS" if rounds[key].get("ppm_used") is None else "PPM-MCTS"
            accept = stages.get("accept")
            if policy and accept is not None and not accept["accepted"]:
                policy = accept["incumbent"]
                kind += "; its policy rejected, the previous kept"
            if policy:
                out.append((f"round {number} ({kind})", policy, ppm))
    return out


def pair_accuracy(
    policy: str,
    ppms: list[tuple[str, str]],
    executor: Any,
    problems: list[dict[str, Any]],
    seed: int,
    every_sentence: bool = False,
    judge_lm: str | None = None,
) -> dict[str, Any]:
    """Pairs from terminal-guided MCTS trees of held-out problems, scored by each PPM (and by
    :class:`StepLikelihoodJudge` over ``judge_lm``, if given)."""
    from rstar_math import MCTSSolver, SearchConfig
    from rstar_math.generators import HFGenerator
    from rstar_math.scorers import PPMModel
    from rstar_math.training import evaluate_pairs, extract_pairs

    generator = HFGenerator(policy, device="cpu", max_batch_size=256, seed=seed)
    config = SearchConfig.from_dict({**search(METHODS["MCTS"]), "seed": seed + 1})
    solver = MCTSSolver(generator, executor=executor, config=config)
    results = solver.solve_batch([p["question"] for p in problems], [p["answer"] for p in problems])
    pairs = [pair for r in results for pair in extract_pairs(r.tree)]
    out: dict[str, Any] = {"pairs": len(pairs), "problems": len(problems)}
    for name, ppm_dir in ppms:
        model = PPMModel.from_pretrained(ppm_dir, dtype="float32")
        out[name] = evaluate_pairs(model, pairs) if pairs else None
    if pairs and all(p.get("steps") for p in problems):
        out[ORACLE] = reference_oracle(pairs, problems, executor, every_sentence)
    if pairs and judge_lm:
        out[JUDGE] = scorer_pair_accuracy(StepLikelihoodJudge(judge_lm), pairs)
    return out


class TeacherOracle:
    """A Scorer that knows each problem's teacher solution: the PPM a search could hope for.

    A partial solution scores +1 when every name its code steps bind holds the value the
    teacher's solution gives that name (a final code step must also print the answer, an answer
    step box it), else -1. Guiding MCTS with it bounds what a perfect PPM could make of the
    policy's candidates at the same budget.

    Steps written as equations (``teacher_solution(equations=True)``: each step binds sympy
    symbols and appends to ``eqs``) are judged by what they state instead: right when every
    equation in ``eqs`` names only the teacher's quantities and holds at the teacher's values.
    """

    _MARK = "@@oracle@@"
    _EQ_MARK = "@@oracle-eqs@@"

    def __init__(
        self, problems: list[dict[str, Any]], executor: Any, every_sentence: bool = False
    ) -> None:
        from rstar_math.interfaces import ExecRequest

        self.executor = executor
        self.answers = {p["question"]: p["answer"] for p in problems}
        #: every-sentence solutions (teacher_solution(every_sentence=True)) are judged by what
        #: each step states: its equation must be the teacher's for the same sentence
        self.statements = (
            {p["question"]: [eq for _, eq in p["meta"]["sentence_equations"]] for p in problems}
            if every_sentence
            else None
        )
        if self.statements is not None:
            return  # judged by the statements alone: nothing to run
        requests = []
        for p in problems:
            codes = [code for _, code in p["steps"]]
            requests.append(
                ExecRequest(self._reporting("\n".join(codes), self._names(codes) or []))
            )
        self.values = {
            p["question"]: self._values(r.stdout)[0]
            for p, r in zip(problems, executor.execute_batch(requests), strict=True)
        }

    @staticmethod
    def _names(codes: list[str]) -> list[str] | None:
        from rstar_math.training import bound_names

        names: list[str] = []
        for code in codes:
            bound = bound_names(code)
            if bound is None:
                return None
            names += [n for n in bound if n not in names]
        return names

    @classmethod
    def _reporting(cls, code: str, names: list[str]) -> str:
        """``code`` followed by one marked line per name with its value's repr."""
        return "\n".join([code, *(f"print({cls._MARK!r}, {n!r}, repr({n}))" for n in names)])

    @classmethod
    def _equations_hold(cls, code: str, reference: dict[str, str]) -> str:
        """``code``, then one marked line: whether every equation in ``eqs`` holds at
        ``reference`` and names nothing else (a bare ``True`` says nothing: it is wrong)."""
        numbers = {n: v for n, v in reference.items() if _is_number(v)}  # not sympy's x
        values = "{" + ", ".join(f"{n!r}: {v}" for n, v in numbers.items()) + "}"
        check = (
            "from sympy import Equality as oracle_equality\n"
            f"oracle_reference = {values}\n"
            "oracle_ok = all(isinstance(e, oracle_equality)"
            " and all(str(s) in oracle_reference for s in e.free_symbols)"
            " and bool(e.subs({s: oracle_reference[str(s)] for s in e.free_symbols}))"
            " for e in eqs)\n"
            f"print({cls._EQ_MARK!r}, oracle_ok)"
        )
        return f"{code}\n{check}"

    @classmethod
    def _values(cls, stdout: str) -> tuple[dict[str, str], str]:
        values, rest = {}, []
        for line in stdout.splitlines():
            if line.startswith(cls._MARK + " "):
                _, name, value = line.split(" ", 2)
                values[name] = value
            else:
                rest.append(line)
        return values, "\n".join(rest)

    def score(self, requests: Any) -> list[float]:
        from rstar_math.format import ANSWER_START, CODE_END, extract_boxed, extract_code
        from rstar_math.grading import is_equivalent
        from rstar_math.interfaces import ExecRequest

        if self.statements is not None:
            return [self._score_statements(req) for req in requests]
        scores: list[float] = [-1.0] * len(requests)
        pending: list[tuple[int, list[str], bool]] = []
        exec_requests = []
        for i, req in enumerate(requests):
            answer = self.answers[req.question]
            last = req.steps[-1] if req.steps else ""
            if ANSWER_START in last:
                boxed = extract_boxed(last)
                scores[i] = 1.0 if boxed is not None and is_equivalent(boxed, answer) else -1.0
                continue
            codes = [extract_code(step) for step in req.steps]
            names = self._names(codes)
            if not codes or names is None:
                continue
            reference = self.values[req.question]
            if "eqs" in names:
                code = self._equations_hold(codes[-1], reference)
            else:
                code = self._reporting(codes[-1], names)
            exec_requests.append(ExecRequest(code, tuple(codes[:-1])))
            pending.append((i, names, CODE_END in last))
        results = self.executor.execute_batch(exec_requests) if exec_requests else []
        for (i, names, final), res in zip(pending, results, strict=True):
            if not res.ok:
                continue
            reference = self.values[requests[i].question]
            if "eqs" in names:
                lines = res.stdout.splitlines()
                right = bool(lines) and lines[-1] == f"{self._EQ_MARK} True"
                printed = "\n".join(lines[:-1])
            else:
                values, printed = self._values(res.stdout)
                right = all(
                    n in reference and n in values and _same(values[n], reference[n]) for n in names
                )
            if final:
                shown = printed.strip().splitlines()[-1:]
                answer = self.answers[requests[i].question]
                right = right and bool(shown) and is_equivalent(shown[0], answer)
            scores[i] = 1.0 if right else -1.0
        return scores

    def _score_statements(self, req: Any) -> float:
        """+1 when the i-th code step states the teacher's i-th equation (for every i), the final
        code step comes after the last sentence and prints the answer, an answer step boxes it."""
        from rstar_math.data.synthetic import same_statement, stated_equations
        from rstar_math.format import ANSWER_START, CODE_END, extract_boxed, extract_code
        from rstar_math.grading import is_equivalent

        answer = self.answers[req.question]
        reference = self.statements[req.question]  # type: ignore[index]
        last = req.steps[-1] if req.steps else ""
        if ANSWER_START in last:
            boxed = extract_boxed(last)
            return 1.0 if boxed is not None and is_equivalent(boxed, answer) else -1.0
        final = CODE_END in last
        statements = req.steps[:-1] if final else req.steps
        if len(statements) > len(reference) or (final and len(statements) != len(reference)):
            return -1.0
        for step, expected in zip(statements, reference):
            stated = stated_equations(extract_code(step))
            if stated is None or len(stated) != 1 or not same_statement(stated[0], expected):
                return -1.0
        if final:
            shown = last.split("<output>")[-1].split("<end_of_output>")[0].strip().splitlines()
            return 1.0 if shown and is_equivalent(shown[-1], answer) else -1.0
        return 1.0


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    except ValueError:
        return False


def relation_flip(
    ppms: list[tuple[str, str]],
    problems: list[dict[str, Any]],
    teacher: dict[str, bool] | None = None,
    judge_lm: str | None = None,
) -> dict[str, Any]:
    """Each PPM's accuracy on :func:`relation_flip_pairs`, per sign of the teacher's step (and
    :class:`StepLikelihoodJudge`'s over ``judge_lm``, if given)."""
    from rstar_math.scorers import PPMModel
    from rstar_math.training import evaluate_pairs

    flips = relation_flip_pairs(problems, teacher)
    out: dict[str, Any] = {"pairs": len(flips["+"]), "ppms": {}}
    if not flips["+"]:
        return out
    for name, ppm_dir in ppms:
        model = PPMModel.from_pretrained(ppm_dir, dtype="float32")
        acc = {sign: evaluate_pairs(model, flips[sign])["accuracy"] for sign in "+-"}
        out["ppms"][name] = {"plus": acc["+"], "minus": acc["-"]}
    if judge_lm:
        judge = StepLikelihoodJudge(judge_lm)
        acc = {sign: scorer_pair_accuracy(judge, flips[sign])["accuracy"] for sign in "+-"}
        out["ppms"][JUDGE] = {"plus": acc["+"], "minus": acc["-"]}
    return out


#: A teacher step ``x = y + 4`` / ``x = y - 4`` (or ``eqs.append('x = y + 4')``, as the
#: every-sentence teacher writes it) whose comment states the relation in words.
_SIGNED_STEP = re.compile(r"^(eqs\.append\(')?(\w+) = (\w+) ([+-]) (\d+)('\))?$")
_RELATION_WORDS = {"+": ("more",), "-": ("fewer", "less")}


def relation_flip_pairs(
    problems: list[dict[str, Any]], teacher: dict[str, bool] | None = None
) -> dict[str, list[Any]]:
    """Teacher steps against the same step with the relation flipped, by the teacher's sign.

    For every reference step ``x = y + d`` whose comment says "more" (or ``x = y - d`` saying
    "fewer"/"less"), the pair's positive is the step and its negative the same step with sign
    and word swapped, after the same teacher prefix. Both steps are well formed and consistent
    with themselves, so only the question tells them apart: a PPM that reads the question ranks
    both kinds, one that has learned a prior over steps ranks one kind and fails the other.
    Equal numbers of each kind (the first ones in problem order). ``teacher``: the keywords of
    :func:`~rstar_math.data.synthetic.teacher_solution` the policy learned from (default: the
    stored plain solution).
    """
    from rstar_math.data.synthetic import SyntheticProblem, teacher_solution
    from rstar_math.format import split_solution
    from rstar_math.training import PreferencePair

    found: dict[str, list[Any]] = {"+": [], "-": []}
    for problem in problems:
        solution = problem.get("solution", "")
        if teacher:
            solution = teacher_solution(SyntheticProblem.from_dict(problem), **teacher)
        chunks = [step.text for step in split_solution(solution)]
        for i, chunk in enumerate(chunks):
            lines = chunk.rstrip().split("\n")
            if len(lines) < 3 or not lines[-1].endswith("<end_of_step>"):
                continue
            comment, code = lines[-3], lines[-2]
            m = _SIGNED_STEP.match(code)
            if not m or not comment.lstrip().startswith("#"):
                continue
            sign = m.group(4)
            words = [w for w in _RELATION_WORDS[sign] if re.search(rf"\b{w}\b", comment)]
            if len(words) != 1:
                continue
            other = "-" if sign == "+" else "+"
            flipped_comment = re.sub(rf"\b{words[0]}\b", _RELATION_WORDS[other][0], comment)
            head, tail = m.group(1) or "", m.group(6) or ""
            flipped_code = f"{head}{m.group(2)} = {m.group(3)} {other} {m.group(5)}{tail}"
            flipped = "\n".join([*lines[:-3], flipped_comment, flipped_code, lines[-1]])
            found[sign].append(
                PreferencePair(problem["question"], chunks[:i], [chunk], [flipped], "step")
            )
    n = min(len(found["+"]), len(found["-"]))
    return {sign: pairs[:n] for sign, pairs in found.items()}


class StepLikelihoodJudge:
    """A Scorer that values a partial solution by how likely a causal LM finds its last step.

    Not a PPM and not trained for judging: the value is ``2 * p - 1``, where ``p`` is the LM's
    probability of the least likely token of the last step (its own text, not the executor's
    ``<output>``), given the question in the SFT prompt and the steps before it. A step that
    miscopies one name or number from the question has one very unlikely token for an LM that
    copies reliably, so a larger policy of the same domain judges a smaller policy's steps this
    way with no training at all: the benchmark sets it beside the PPMs to tell whether what a
    PPM needs to know is in a model of that size. The LM must have been trained with the
    library's SFT prompt (:meth:`~rstar_math.format.PromptTemplate.sft`), as the built-in
    models are.
    """

    def __init__(self, model_dir: str, device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rstar_math.format import PromptTemplate

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
        self.device = device
        self.prompt = PromptTemplate.sft()

    def score(self, requests: Any) -> list[float]:
        return [self._value(r.question, tuple(r.steps)) for r in requests]

    def _value(self, question: str, steps: tuple[str, ...]) -> float:
        import torch

        if not steps:
            return 0.0
        step = steps[-1].split("<output>")[0]
        context = self.prompt.render(question) + "".join(steps[:-1])
        head = self.tokenizer(context, add_special_tokens=False)["input_ids"]
        tail = self.tokenizer(step, add_special_tokens=False)["input_ids"]
        if not tail:
            return 0.0
        ids = torch.tensor([head + tail], device=self.device)
        with torch.no_grad():
            logprobs = self.model(ids).logits[0, :-1].float().log_softmax(-1)
        chosen = logprobs[len(head) - 1 :].gather(1, ids[0, len(head) :, None])[:, 0]
        return 2.0 * math.exp(chosen.min().item()) - 1.0


def scorer_pair_accuracy(scorer: Any, pairs: list[Any]) -> dict[str, float]:
    """Pair accuracy (ties half) of any Scorer on step pairs, scoring each continuation after
    its pair's prefix (answer-level pairs, whole solutions, are left out)."""
    from rstar_math.interfaces import ScoreRequest

    steps = [p for p in pairs if p.level == "step"]
    requests = [
        ScoreRequest(p.question, (*p.prefix_steps, text))
        for p in steps
        for text in (*p.pos, *p.neg)
    ]
    values = iter(scorer.score(requests))
    wins = strict = combos = 0.0
    for pair in steps:
        pos = [next(values) for _ in pair.pos]
        neg = [next(values) for _ in pair.neg]
        for a in pos:
            for b in neg:
                combos += 1
                wins += 1.0 if a > b else 0.5 if a == b else 0.0
                strict += a > b
    if not combos:
        return {"accuracy": float("nan"), "strict_accuracy": float("nan"), "combos": 0.0}
    return {"accuracy": wins / combos, "strict_accuracy": strict / combos, "combos": combos}


def _bound_name(code: str) -> str | None:
    """The name a step's last top-level assignment binds (None: it binds none, e.g. a print)."""
    import ast

    try:
        body = ast.parse(code).body
    except SyntaxError:
        return None
    for stmt in reversed(body):
        if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) and isinstance(stmt.target, ast.Name):
            return stmt.target.id
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[-1], ast.Name):
            return stmt.targets[-1].id
    return None


def _as_number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def reference_oracle(
    pairs: list[Any], problems: list[dict[str, Any]], executor: Any, every_sentence: bool = False
) -> dict[str, float]:
    """Pair accuracy of a judge that knows each problem's reference (teacher) solution.

    It ranks a whole solution by its answer, graded against the reference; and a step as right
    when the value it binds is one the reference solution computes (a step that binds nothing,
    such as the final print, counts as right). The pairs' labels come from where the policy's
    rollouts went, so a correct step whose rollouts all failed is a negative: this judge's
    accuracy is about the most a PPM that knows which steps are correct can score on them.
    Every-sentence steps are judged by what they state (:class:`TeacherOracle`).
    """
    from rstar_math.format import extract_code
    from rstar_math.grading import extract_answer, is_equivalent
    from rstar_math.interfaces import ExecRequest, ScoreRequest

    by_question = {p["question"]: p for p in problems}
    if every_sentence:
        oracle = TeacherOracle(problems, executor, every_sentence=True)
        verdicts = []
        for pair in pairs:
            if pair.level == "answer":
                answer = by_question[pair.question]["answer"]
                verdicts.append(
                    [is_equivalent(extract_answer(t) or "", answer) for t in (*pair.pos, *pair.neg)]
                )
            else:
                verdicts.append([
                    oracle._score_statements(
                        ScoreRequest(pair.question, (*pair.prefix_steps, text))
                    ) > 0
                    for text in (*pair.pos, *pair.neg)
                ])  # fmt: skip
        return _oracle_accuracy(pairs, verdicts)
    # every value the reference solution computes, one print per bound name
    refs: dict[str, set[float | str]] = {}
    requests, owners = [], []
    for question, problem in by_question.items():
        codes = [code for _, code in problem["steps"]]
        names = [n for n in (_bound_name(c) for c in codes) if n]
        requests.append(ExecRequest("\n".join([*codes, *(f"print(repr({n}))" for n in names)])))
        owners.append(question)
    for question, res in zip(owners, executor.execute_batch(requests), strict=True):
        refs[question] = {_as_number(line) for line in res.stdout.splitlines()} if res.ok else set()

    # one request per step that binds a name (all pairs at once: one batch for the executor)
    step_reqs: list[list[ExecRequest | None]] = []
    for pair in pairs:
        context = tuple(extract_code(c) for c in pair.prefix_steps)
        reqs: list[ExecRequest | None] = []
        for step in (*pair.pos, *pair.neg):
            code = extract_code(step)
            name = _bound_name(code) if pair.level == "step" else None
            reqs.append(
                None if name is None else ExecRequest(f"{code}\nprint(repr({name}))", context)
            )
        step_reqs.append(reqs)
    results = iter(executor.execute_batch([r for reqs in step_reqs for r in reqs if r is not None]))

    verdicts = []
    for pair, reqs in zip(pairs, step_reqs, strict=True):
        problem = by_question[pair.question]
        right: list[bool] = []
        for text, req in zip((*pair.pos, *pair.neg), reqs, strict=True):
            if pair.level == "answer":
                right.append(is_equivalent(extract_answer(text) or "", problem["answer"]))
            elif req is None:
                right.append(True)
            else:
                res = next(results)
                last = res.stdout.strip().splitlines()[-1:] if res.ok else []
                right.append(bool(last) and _as_number(last[0]) in refs[pair.question])
        verdicts.append(right)
    return _oracle_accuracy(pairs, verdicts)


def _oracle_accuracy(pairs: list[Any], verdicts: list[list[bool]]) -> dict[str, float]:
    """Pair accuracy (ties half) and strict accuracy of right/wrong verdicts on pos + neg."""
    wins = strict = combos = 0.0
    for pair, right in zip(pairs, verdicts, strict=True):
        pos, neg = right[: len(pair.pos)], right[len(pair.pos) :]
        for a in pos:
            for b in neg:
                combos += 1
                wins += 1.0 if a > b else 0.5 if a == b else 0.0
                strict += a > b
    if not combos:
        return {"accuracy": float("nan"), "strict_accuracy": float("nan"), "combos": 0.0}
    return {"accuracy": wins / combos, "strict_accuracy": strict / combos, "combos": combos}


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One unit of the benchmark, in its own process: a method on a split, a round's policy on
    validation, or the pair accuracy of every PPM. Returns ``{"key": ..., "result": ...}``."""
    import torch

    torch.set_num_threads(job["threads"])
    from rstar_math.executors import SandboxExecutor
    from rstar_math.generators import HFGenerator
    from rstar_math.scorers import PPMScorer

    seed = job["seed"]
    teacher = job.get("teacher", {})
    every_sentence = bool(teacher.get("every_sentence"))
    executor = SandboxExecutor()
    try:
        if job["kind"] == "pairs":
            result: Any = pair_accuracy(
                job["policy"],
                job["ppms"],
                executor,
                job["problems"],
                seed,
                every_sentence,
                job.get("judge_lm"),
            )
        elif job["kind"] == "flip":
            result = relation_flip(job["ppms"], job["problems"], teacher, job.get("judge_lm"))
        else:
            generator = HFGenerator(job["policy"], device="cpu", max_batch_size=256, seed=seed)
            scorer: Any = None
            if job.get("oracle"):
                scorer = TeacherOracle(job["problems"], executor, every_sentence)
            elif job.get("judge_lm"):
                scorer = StepLikelihoodJudge(job["judge_lm"])
            elif job.get("ppm"):
                scorer = PPMScorer.from_pretrained(job["ppm"], device="cpu", batch_size=32)
            result = evaluate_method(
                generator,
                scorer,
                executor,
                job["problems"],
                job["search"],
                seed,
                job.get("derived"),
            )
    finally:
        executor.close()
    return {"key": job["key"], "id": job_id(job), "result": result}


def job_id(job: dict[str, Any]) -> str:
    """A job's identity for the cache: everything that determines its result."""
    spec = {k: v for k, v in job.items() if k not in ("key", "threads", "round")}
    for name in ("policy", "ppm", "judge_lm"):  # the weights themselves, not only their path
        if spec.get(name):
            spec[name] = _digest(spec[name])
    if "ppms" in spec:
        spec["ppms"] = [(name, _digest(p)) for name, p in spec["ppms"]]
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _digest(model_dir: str) -> str:
    """The weights' identity: ``model.safetensors``, plus a PPM's own settings and its token
    evidence weights when it has them (they change its values with the same backbone)."""
    weights = Path(model_dir) / "model.safetensors"
    if not weights.is_file():
        return model_dir
    digest = hashlib.sha256(weights.read_bytes())
    for extra in ("ppm_evidence.safetensors", "ppm_config.json"):
        if (Path(model_dir) / extra).is_file():
            digest.update(extra.encode() + (Path(model_dir) / extra).read_bytes())
    return digest.hexdigest()[:20]


def teacher_format(run: Path) -> dict[str, bool]:
    """The ``teacher_solution`` keywords of the build in ``run`` (what its policy learned to
    write; an older build's recipe, or none, gives the plain teacher's)."""
    path = run / "build.json"
    recipe = json.loads(path.read_text()).get("recipe", {}) if path.is_file() else {}
    if recipe.get("teacher_every_sentence"):
        return {"every_sentence": True, "numbered": bool(recipe.get("teacher_step_numbers"))}
    keys = ("plan", "quote", "equations")
    return {k: bool(recipe.get(f"teacher_{k}")) for k in keys if recipe.get(f"teacher_{k}")}


#: The pair tables' name for the method rows' PPM (--ppm) when it is none of the run's rounds'.
METHOD_ROWS_PPM = "--ppm (the PPM of the method rows)"


def _same_dir(a: str, b: str) -> bool:
    """The same model: the same directory, or the same weights (an installed copy of a round's)."""
    return Path(a).resolve() == Path(b).resolve() or _digest(a) == _digest(b)


def plan_jobs(args: argparse.Namespace, run: Path, policy: str, ppm: str) -> list[dict[str, Any]]:
    splits = {"val": load_split(run, "val", args.n), "hard": load_split(run, "hard", args.n_hard)}
    base = {"threads": args.threads, "seed": args.seed, "teacher": teacher_format(run)}
    judge_lm = getattr(args, "judge_lm", None)
    jobs: list[dict[str, Any]] = []
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:
        if method not in METHODS:
            raise SystemExit(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        if method in USES_JUDGE and not judge_lm:
            continue  # a reference that needs an LM to judge with: only with --judge-lm
        derived = {row: sel for row, (src, sel) in DERIVED.items() if src == method}
        for split, problems in splits.items():
            jobs.append({
                **base, "kind": "method", "key": ["methods", f"{split}/{method}"],
                "policy": policy, "ppm": ppm if method in USES_PPM else None,
                **({"oracle": True} if method in USES_ORACLE else {}),
                **({"judge_lm": judge_lm} if method in USES_JUDGE else {}),
                "search": search(METHODS[method], args.temperature, args.rollouts),
                "problems": problems,
                **({"derived": derived} if derived else {}),
            })  # fmt: skip
    models = round_models(run)
    if not args.skip_rounds:
        val = splits["val"][: args.n_rounds]
        for i, (name, pol, _ppm) in enumerate(models):
            for method, label in (("greedy", "greedy"), ("MCTS", "mcts")):
                jobs.append({
                    **base, "kind": "method", "key": ["rounds", i, label], "round": name,
                    "policy": pol, "problems": val,
                    "search": search(METHODS[method], args.temperature, args.rollouts),
                })  # fmt: skip
    if not args.skip_pairs:
        ppms = [(name, p) for name, _pol, p in models if p] or [("shipped", ppm)]
        if ppm and not any(_same_dir(ppm, p) for _name, p in ppms):
            # the method rows' PPM (--ppm) is none of the run's: measure it beside them
            ppms.append((METHOD_ROWS_PPM, ppm))
        # validation trees hold few pairs once the policy solves validation: the hard split's
        # trees (also never trained on) are where the PPM has to tell steps apart
        for key, split in (("pairs", "val"), ("pairs_hard", "hard")):
            jobs.append({
                **base, "kind": "pairs", "key": [key], "policy": policy, "ppms": ppms,
                "problems": splits[split], **({"judge_lm": judge_lm} if judge_lm else {}),
            })  # fmt: skip
        # scoring only, so the whole validation split: more pairs, a tighter estimate
        jobs.append({
            **base, "kind": "flip", "key": ["flip"], "ppms": ppms,
            "problems": load_split(run, "val", sys.maxsize),
            **({"judge_lm": judge_lm} if judge_lm else {}),
        })  # fmt: skip
    # the longest first, so the workers finish together
    weight = {"mcts": 8, "beam": 6, "best_of_n": 5, "greedy": 1}
    size = {"pairs": 10, "flip": 0}  # the flip probe only scores: last

    def cost(job: dict[str, Any]) -> int:
        return size[job["kind"]] if job["kind"] in size else weight[job["search"]["algorithm"]]

    jobs.sort(key=lambda j: -cost(j))
    return jobs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default=str(REPO / "build" / "miniature"))
    ap.add_argument("--n", type=int, default=100, help="validation problems")
    ap.add_argument("--n-hard", type=int, default=50, help="hard problems")
    ap.add_argument("--n-rounds", type=int, default=50, help="val problems for the round table")
    ap.add_argument(
        "--policy", help="policy checkpoint to measure (default: the installed built-in model)"
    )
    ap.add_argument(
        "--ppm", help="PPM checkpoint to measure, with --policy (not needed without PPM methods)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--temperature",
        type=float,
        default=COMMON["temperature"],
        help=f"sampling temperature of every method (default {COMMON['temperature']})",
    )
    ap.add_argument(
        "--rollouts",
        type=int,
        default=METHODS["MCTS"]["num_rollouts"],
        help="rollouts of the MCTS methods (default %(default)s, the issue's budget)",
    )
    ap.add_argument(
        "--judge-lm",
        help="a causal LM (e.g. a larger policy of the domain) whose step likelihood guides a "
        "reference MCTS row and is scored on the PPM pairs (StepLikelihoodJudge)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--skip-rounds", action="store_true")
    ap.add_argument("--skip-pairs", action="store_true")
    ap.add_argument(
        "--no-write",
        action="store_true",
        help="do not append to docs/benchmarks.md, and write the JSON to "
        "RUN/benchmark.scratch.json, not RUN/benchmark.json",
    )
    ap.add_argument(
        "--json",
        help="the JSON file to write (or, with --render-only, to read); default "
        "RUN/benchmark.json (RUN/benchmark.scratch.json with --no-write)",
    )
    ap.add_argument("--no-cache", action="store_true", help="rerun jobs found in the cache")
    ap.add_argument(
        "--render-only", action="store_true", help="render RUN/benchmark.json, run nothing"
    )
    args = ap.parse_args(argv)
    if args.temperature <= 0:
        raise SystemExit(f"--temperature must be > 0 (sampling methods), got {args.temperature}")
    if args.rollouts < 1:
        raise SystemExit(f"--rollouts must be >= 1, got {args.rollouts}")
    named = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.methods != ap.get_default("methods") and USES_JUDGE & set(named) and not args.judge_lm:
        raise SystemExit(f"{', '.join(sorted(USES_JUDGE & set(named)))} needs --judge-lm DIR")
    if args.judge_lm and not Path(args.judge_lm).is_dir():
        raise SystemExit(f"--judge-lm: no model directory at {args.judge_lm}")
    run = Path(args.run_dir)
    if args.render_only:
        body = render(json.loads(Path(args.json or run / "benchmark.json").read_text()))
        print(body)
        if not args.no_write:
            append_section("Miniature model (issue 7)", body)
        return 0

    from rstar_math.models.builtin import builtin_paths

    if args.ppm and not args.policy:
        raise SystemExit("--ppm needs --policy")
    if args.policy and not args.ppm:
        scored = [m.strip() for m in args.methods.split(",") if m.strip() in USES_PPM]
        if scored or not args.skip_pairs:
            raise SystemExit(
                "--policy without --ppm: "
                + (f"{', '.join(scored)} need" if scored else "the PPM pair tables need")
                + " a PPM; give --ppm, or leave them out (--methods, --skip-pairs)"
            )
    paths = (args.policy, args.ppm or "") if args.policy else builtin_paths()
    needs_model = bool(args.methods.strip()) or not args.skip_pairs
    if paths is None and needs_model:
        print("no built-in model installed: run scripts/build_miniature.py first", file=sys.stderr)
        return 1
    policy_dir, ppm_dir = paths or ("", "")
    jobs = plan_jobs(args, run, policy_dir, ppm_dir)
    out: dict[str, Any] = {
        "policy": policy_dir,
        "ppm": ppm_dir,
        "n": args.n,
        "n_hard": args.n_hard,
        "jobs": args.jobs,
        "temperature": args.temperature,
        "rollouts": args.rollouts,
        "judge_lm": args.judge_lm,
        # a hard file replaced by another problem set (a probe) must not be called the hard split
        "hard_levels": sorted(
            {str(p["level"]) for p in load_split(run, "hard", args.n_hard) if "level" in p}
        ),
        "hard_split_level": build_hard_level(run),
    }
    out["methods"], out["rounds"] = (
        {},
        [{"round": name, "policy": pol} for name, pol, _ in round_models(run)]
        if not args.skip_rounds
        else [],
    )
    t0 = time.perf_counter()
    cache = run / "benchmark_cache"
    cache.mkdir(parents=True, exist_ok=True)
    todo, finished = [], []
    for job in jobs:
        path = cache / f"{job_id(job)}.json"
        if path.exists() and not args.no_cache:
            finished.append((job, json.loads(path.read_text())["result"]))
        else:
            todo.append(job)
    print(f"{len(todo)} jobs to run, {len(finished)} cached in {cache}", flush=True)
    out["jobs_cached"], out["jobs_total"] = len(finished), len(jobs)
    failures: list[str] = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        futures = {pool.submit(run_job, job): job for job in todo}
        for future in as_completed(futures):
            job = futures[future]
            try:
                done = future.result()
            except Exception as exc:  # one failed job must not lose the others' results
                failures.append(f"{job['key']}: {type(exc).__name__}: {exc}")
                print(f"{job['key']} FAILED: {exc!r}", flush=True)
                continue
            tmp = cache / f"{done['id']}.json.tmp"
            tmp.write_text(json.dumps(done, default=str))
            os.replace(tmp, cache / f"{done['id']}.json")
            finished.append((job, done["result"]))
            print(f"{job['key']}: {json.dumps(done['result'], default=str)}", flush=True)
    for job, result in finished:
        record_result(out, job["key"], result)
    if failures:
        out["failures"] = failures
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)

    build = run / "build.json"
    if build.exists():
        out["build"] = json.loads(build.read_text())
    if run.exists() or args.json:
        json_path(args, run).write_text(json.dumps(out, indent=2, default=str) + "\n")
    body = render(out)
    print(body)
    if not args.no_write:
        append_section("Miniature model (issue 7)", body)
    return 1 if failures else 0


def json_path(args: argparse.Namespace, run: Path) -> Path:
    """Where a run writes its JSON: ``--json``, else ``RUN/benchmark.json`` for a run that
    updates the docs and ``RUN/benchmark.scratch.json`` for a side run (``--no-write``), so a
    quick probe never replaces the JSON behind the docs' table."""
    if args.json:
        return Path(args.json)
    return run / ("benchmark.scratch.json" if args.no_write else "benchmark.json")


def record_result(out: dict[str, Any], key: list[Any], result: dict[str, Any]) -> None:
    """File one job's ``result`` under its ``key`` in the benchmark's output ``out``."""
    if key[0] == "methods":
        out["methods"][key[1]] = result
        split = key[1].split("/")[0]
        for row, extra in result.get("derived", {}).items():
            # the same trajectories (budget, time) as its source, with its own accuracy
            out["methods"][f"{split}/{row}"] = {**result, **extra, "derived_from": key[1]}
    elif key[0] == "rounds":
        out["rounds"][key[1]][key[2]] = result
    elif key[0] == "flip":
        out["flip"] = result
    else:  # "pairs" (validation trees) or "pairs_hard" (hard trees)
        out[key[0]] = result


def wall_time(out: dict[str, Any]) -> str:
    """How long the run took, and which results it did not measure itself (cached jobs)."""
    minutes = f"{out.get('wall_seconds', 0) / 60:.1f} min"
    cached, total = out.get("jobs_cached", 0), out.get("jobs_total", 0)
    if not cached:
        return f"{minutes} in all"
    if cached == total:
        return f"every one of the {total} jobs' results came from the cache of an earlier run"
    return (
        f"{minutes} for the {total - cached} jobs run now; {cached} of the {total} jobs' results "
        "came from the cache of an earlier run"
    )


def build_hard_level(run: Path) -> str:
    """The level the build drew its hard split from (``hard_level`` in ``RUN/build.json``'s
    recipe; builds before that key used the library's ``hard``)."""
    path = run / "build.json"
    if not path.is_file():
        return "hard"
    return str(json.loads(path.read_text()).get("recipe", {}).get("hard_level") or "hard")


def _hard_label(out: dict[str, Any]) -> str:
    """What the hard column measures: the build's hard split, or the levels of whatever
    problem set was put in its place."""
    split_level = out.get("hard_split_level", "hard")
    levels = out.get("hard_levels") or [split_level]
    if levels == [split_level]:
        kind = "" if split_level == "hard" else f", level {split_level}"
        return f"held-out hard (8-9 steps{kind})"
    return f"'hard' (not the hard split: levels {', '.join(levels)})"


def render(out: dict[str, Any]) -> str:
    lines = [
        f"Built-in policy and PPM on the synthetic domain, {out['n']} validation (levels 1-3) and "
        f"{out.get('n_hard', out['n'])} {_hard_label(out)} problems; sampling at "
        f"temperature {out.get('temperature', COMMON['temperature'])}; MCTS with "
        f"{out.get('rollouts', METHODS['MCTS']['num_rollouts'])} rollouts; "
        f"`python benchmarks/miniature.py` ({out.get('jobs', 1)} searches at a time, "
        f"{wall_time(out)}).",
    ]
    table = out.get("methods", {})
    if table:  # none when only the PPM measurements ran (--methods "")
        lines += [
            "",
            "| method | val acc | hard acc | hard: any trajectory correct | step candidates / "
            "problem (hard) | tokens / problem (hard) | s / problem (val, hard) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
    for method in ROWS:
        v, h = table.get(f"val/{method}"), table.get(f"hard/{method}")
        if v is None or h is None:
            continue
        lines.append(
            f"| {method} | {pct(v['accuracy'])} | {pct(h['accuracy'])} | {pct(h['pass_any'])} | "
            f"{h['candidates_per_problem']:.0f} | {h['tokens_per_problem']:.0f} | "
            f"{v['seconds_per_problem']:.2f}, {h['seconds_per_problem']:.2f} |"
        )
    if out.get("judge_lm") and any(k.endswith("/MCTS + LM judge") for k in table):
        lines += [
            "",
            "MCTS + LM judge is a reference, not a method: MCTS + PPM with the PPM replaced by "
            f"the likelihood of each step under `{out['judge_lm']}` (StepLikelihoodJudge).",
        ]
    branching = [
        f"{method} {table[f'hard/{method}']['distinct_children_per_expansion']:.2f}"
        + (f" of {METHODS[method]['num_candidates']}" if method == WIDE else "")
        for method in ROWS
        if method.startswith("MCTS")
        and (table.get(f"hard/{method}") or {}).get("distinct_children_per_expansion")
    ]
    if branching:
        lines += [
            "",
            f"Distinct steps per MCTS expansion on hard (of {METHODS['MCTS']['num_candidates']} "
            "sampled; identical candidates are merged into one node, so 1.00 means the search "
            "grew a single path): " + ", ".join(branching) + ".",
        ]
    if table.get("hard/MCTS + PPM") and table.get("hard/greedy") and table.get("hard/majority@8"):
        m = table["hard/MCTS + PPM"]["accuracy"]
        lines += [
            "",
            f"On hard, MCTS + PPM - greedy = {100 * (m - table['hard/greedy']['accuracy']):+.1f} "
            f"points (target >= +25); MCTS + PPM - majority@8 = "
            f"{100 * (m - table['hard/majority@8']['accuracy']):+.1f} points (target >= +10).",
        ]
        if table.get(f"hard/{WIDE}"):
            w = table[f"hard/{WIDE}"]["accuracy"]
            lines[-1] += (
                f" {WIDE} - greedy = {100 * (w - table['hard/greedy']['accuracy']):+.1f} points; "
                f"- majority@8 = {100 * (w - table['hard/majority@8']['accuracy']):+.1f}."
            )
        if table.get("hard/majority@32") and table.get("hard/best-of-32 (PPM)"):
            counts = ", ".join(
                f"{row} {table[f'hard/{row}']['candidates_per_problem']:.0f}"
                for row in ("best-of-32 (PPM)", "MCTS + PPM", WIDE)
                if table.get(f"hard/{row}")
            )
            lines[-1] += (
                " Against 32 sampled trajectories (step candidates per hard problem: "
                f"{counts}): MCTS + PPM - majority@32 = "
                f"{100 * (m - table['hard/majority@32']['accuracy']):+.1f} points, MCTS + PPM - "
                f"best-of-32 = {100 * (m - table['hard/best-of-32 (PPM)']['accuracy']):+.1f}."
            )
            if table.get(f"hard/{WIDE}"):
                lines[-1] += (
                    f" {WIDE} - majority@32 = "
                    f"{100 * (w - table['hard/majority@32']['accuracy']):+.1f} points, - "
                    f"best-of-32 = {100 * (w - table['hard/best-of-32 (PPM)']['accuracy']):+.1f}."
                )
    if out.get("rounds"):
        lines += [
            "",
            "| round | policy greedy (val) | policy MCTS, majority (val) |",
            "| --- | --- | --- |",
        ]
        for r in out["rounds"]:
            lines.append(
                f"| {r['round']} | {pct(r['greedy']['accuracy'])} | {pct(r['mcts']['accuracy'])} |"
            )
    for key, split in (("pairs", "validation"), ("pairs_hard", "hard")):
        pairs = out.get(key)
        if not pairs:
            continue
        lines += [
            "",
            f"PPM pair accuracy on {pairs['pairs']} preference pairs extracted from "
            f"terminal-guided MCTS trees of {pairs['problems']} {split} problems (held out "
            "from training; a pair sets each of a node's positive children against each "
            "negative one, and accuracy is over these comparisons):",
            "",
            "| PPM | pair accuracy | strict (ties count wrong) | comparisons |",
            "| --- | --- | --- | --- |",
        ]
        for name, res in pairs.items():
            if isinstance(res, dict):
                combos = res.get("combos")
                n = "-" if combos is None else f"{combos:.0f}"
                lines.append(
                    f"| {name} | {pct(res['accuracy'])} | {pct(res['strict_accuracy'])} | {n} |"
                )
    flips = out.get("flip")
    if flips and flips.get("ppms"):
        n = flips["pairs"]
        lines += [
            "",
            f'Does the PPM read the question? {n} teacher steps that add ("more") and {n} '
            'that subtract ("fewer") from the solutions of all validation problems, each '
            "against the same step with sign and word flipped; only the question tells which "
            "is right (a PPM blind to it ranks one kind and fails the other):",
            "",
            '| PPM | right on "more" steps | right on "fewer" steps | mean |',
            "| --- | --- | --- | --- |",
        ]
        for name, res in flips["ppms"].items():
            mean = (res["plus"] + res["minus"]) / 2
            lines.append(f"| {name} | {pct(res['plus'])} | {pct(res['minus'])} | {pct(mean)} |")
    for failure in out.get("failures", []):
        lines.append(f"- failed job {failure}")
    build = out.get("build")
    if build:
        stages = build.get("stages", {})
        parts = ", ".join(f"{k} {v['seconds'] / 60:.1f} min" for k, v in stages.items())
        total = sum(v["seconds"] for v in stages.values())
        lines += ["", f"Rebuild (`scripts/build_miniature.py`): {total / 60:.1f} min ({parts})."]
        evo = stages.get("evolve", {}).get("rounds", {})
        for key, st in sorted(evo.items()):
            gen = st.get("generate", {})
            lines.append(
                f"- evolution {key}: {gen.get('solved')}/{gen.get('problems')} problems solved, "
                f"{st.get('extract', {}).get('sft_records')} SFT records, "
                f"{st.get('extract', {}).get('pairs')} pair records, generation "
                f"{gen.get('seconds', 0) / 60:.1f} min, PPM training-split accuracy "
                f"{pct(st.get('train_ppm', {}).get('final_accuracy'))}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
