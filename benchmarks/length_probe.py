"""Hops or length: what makes the held-out hard split hard for an every-sentence policy.

The shipped recipe's teacher (``teacher_solution(every_sentence=True)``) writes one step per
sentence of the question, distractors included, and each step translates its own sentence into
an equation: no step needs a hop of the problem's dependency graph. The hard split then differs
from training in two ways at once, more hops (8-9 against 1-5) and more sentences (so longer
solutions), and its accuracy alone cannot say which one the policy fails on. This probe takes
them apart: greedy decoding on problem sets that change one and keep the other, and, for each
set, where the first statement that differs from the teacher's comes (judged by what it states,
as the benchmark's teacher oracle judges steps).

It also asks whether search could repair what greedy gets wrong. Feeding in the teacher's
solution, it measures how likely the policy is to sample each teacher step
(:func:`teacher_step_probabilities`): a search that samples candidates can only choose among
what the policy writes, so a step the policy samples right one time in a million is out of
reach for MCTS with a perfect judge.

    python benchmarks/length_probe.py                      # the installed built-in policy
    python benchmarks/length_probe.py --policy P --run-dir RUN --n 80 --no-write

``--run-dir`` leaves out probe problems whose question the build trained on.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_section

REPO = Path(__file__).resolve().parents[1]

#: name -> (what the set keeps and changes, LevelSpec fields: hops, distractors, order weights,
#: complex_weight, sum_prob). The first is training's longest level (level3), the last the
#: hard split's level.
PROBE_SETS: dict[
    str, tuple[str, tuple[int, int], tuple[int, int], tuple[float, ...], float, float]
] = {
    "level3": ("training hops, training length", (4, 5), (1, 4), (0.35, 0.25, 0.4), 1.2, 0.25),
    "more-hops": ("more hops, training length", (6, 7), (0, 1), (0.3, 0.3, 0.4), 1.2, 0.25),
    "hard-hops": ("hard hops, no distractors", (8, 9), (0, 0), (0.3, 0.3, 0.4), 1.2, 0.25),
    "hard-length": ("training hops, hard length", (4, 5), (5, 7), (0.35, 0.25, 0.4), 1.2, 0.25),
    "hard": ("hard hops, hard length", (8, 9), (1, 3), (0.3, 0.3, 0.4), 1.2, 0.25),
}
#: Greedy decoding, with the settings every method of benchmarks/miniature.py shares.
SEARCH = {"algorithm": "greedy", "max_depth": 16, "max_step_tokens": 256, "temperature": 0.7}


def statement_profile(steps: list[str], reference: list[str]) -> tuple[int | None, str]:
    """Where an every-sentence solution first departs from the teacher's ``reference``
    equations (one per sentence, in order): ``(index, kind)``, or ``(None, "none")`` when every
    sentence is stated as the teacher states it.

    ``kind`` is ``"wrong equation"`` (a step states another equation), ``"not one equation"``
    (a code step that states none, or several) or ``"stopped early"`` (the solution, or its
    statements, end before the last sentence).
    """
    from rstar_math.data.synthetic import same_statement, stated_equations
    from rstar_math.format import ANSWER_START, CODE_END, extract_code

    statements = [s for s in steps if ANSWER_START not in s and CODE_END not in s]
    for i, expected in enumerate(reference):
        if i >= len(statements):
            return i, "stopped early"
        stated = stated_equations(extract_code(statements[i]))
        if stated is None or len(stated) != 1:
            return i, "not one equation"
        if not same_statement(stated[0], expected):
            return i, "wrong equation"
    return None, "none"


def probe_problems(
    name: str, n: int, seed: int, exclude: set[str] | frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """``n`` problems of probe set ``name`` whose questions are not in ``exclude``."""
    from rstar_math.data.synthetic import LevelSpec, generate_problems

    _, hops, distractors, order, complex_weight, sum_prob = PROBE_SETS[name]
    spec = LevelSpec(f"probe-{name}", hops, distractors, order, complex_weight, sum_prob)  # type: ignore[arg-type]
    want = n
    while True:  # the same seed draws the same problems first: draw more until n are new
        drawn = generate_problems(want, spec, seed=seed)
        kept = [p.to_dict() for p in drawn if p.question not in exclude]
        if len(kept) >= n:
            return kept[:n]
        want *= 2


def teacher_step_probabilities(
    model: Any, tokenizer: Any, question: str, solution: str, temperature: float
) -> list[float]:
    """The chance that one sample at ``temperature`` writes each step of the teacher's
    ``solution`` token for token, given the teacher's steps before it (teacher forcing).

    The text is encoded as the SFT trainer encodes it (prompt and response apart). The steps are
    the code steps (each up to its ``<end_of_step>`` or ``<end_of_code>``) and the answer; the
    executor's output between them is not the policy's to write and is left out. A step the
    policy samples right one time in a thousand is out of reach of any search that samples
    candidates, however good its judge: search can only choose among what the policy writes.
    """
    import torch

    from rstar_math.format import ANSWER_START, CODE_END, STEP_END, PromptTemplate

    prompt_ids = list(
        tokenizer(PromptTemplate.sft().render(question), add_special_tokens=False)["input_ids"]
    )
    encoded = tokenizer(solution, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
    code_end = solution.find(CODE_END) + len(CODE_END)
    answer = solution.find(ANSWER_START, code_end)
    if code_end < len(CODE_END) or answer < 0:
        raise ValueError("the teacher's solution has no final code step and answer")
    ends = [i + len(STEP_END) for i in _find_all(solution[:code_end], STEP_END)] + [code_end]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1 : -1]
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    token_logp = logp.gather(1, torch.tensor(ids)[:, None])[:, 0].tolist()
    steps: dict[int, float] = {}
    for (start, _), lp in zip(offsets, token_logp, strict=True):
        if code_end <= start < answer:
            continue  # the executor's output, written by the solver, not the policy
        k = sum(start >= e for e in ends)
        steps[k] = steps.get(k, 0.0) + lp
    return [math.exp(steps[k]) for k in sorted(steps)]


def _find_all(text: str, sub: str) -> list[int]:
    out, i = [], text.find(sub)
    while i >= 0:
        out.append(i)
        i = text.find(sub, i + len(sub))
    return out


def reach(step_probabilities: list[float], samples: int) -> float:
    """The chance that ``samples`` candidates per step hold the teacher's step at every step:
    what a perfect judge needs to walk the teacher's path without backtracking."""
    return math.prod(1 - (1 - p) ** samples for p in step_probabilities)


def summarise(problems: list[dict[str, Any]], solutions: list[dict[str, Any]]) -> dict[str, Any]:
    """A probe set's row: accuracy, sentences per problem, where and how solutions go wrong."""
    firsts = [s["first_wrong"] for s in solutions if s["first_wrong"] is not None]
    n = max(len(problems), 1)
    by_sentences: dict[int, list[int]] = {}
    for p, s in zip(problems, solutions, strict=True):
        by_sentences.setdefault(len(p["meta"]["sentence_equations"]), []).append(int(s["correct"]))
    return {
        "n": len(problems),
        "accuracy": sum(s["correct"] for s in solutions) / n,
        "sentences": statistics.mean(len(p["meta"]["sentence_equations"]) for p in problems)
        if problems
        else 0.0,
        "all_stated": sum(s["first_wrong"] is None for s in solutions) / n,
        "first_wrong_median": statistics.median(firsts) + 1 if firsts else None,
        "first_wrong_late": sum(f >= 7 for f in firsts) / len(firsts) if firsts else None,
        "kinds": dict(Counter(s["kind"] for s in solutions if s["kind"] != "none")),
        **_reach_summary([s["step_probabilities"] for s in solutions if "step_probabilities" in s]),
        "by_sentences": {k: [sum(v), len(v)] for k, v in sorted(by_sentences.items())},
    }


def _reach_summary(step_probabilities: list[list[float]]) -> dict[str, float | None]:
    """Teacher-forced reach of a set: mean reach at 4 and 32 samples per step, and the median
    over problems of the weakest teacher step's chance per sample."""
    if not step_probabilities:
        return {"reach_4": None, "reach_32": None, "weakest_step_median": None}
    return {
        "reach_4": statistics.mean(reach(ps, 4) for ps in step_probabilities),
        "reach_32": statistics.mean(reach(ps, 32) for ps in step_probabilities),
        "weakest_step_median": statistics.median(min(ps) for ps in step_probabilities),
    }


def run_set(job: dict[str, Any]) -> dict[str, Any]:
    """One probe set, greedy, in its own process."""
    import torch

    torch.set_num_threads(job["threads"])
    from rstar_math import MCTSSolver, SearchConfig
    from rstar_math.executors import SandboxExecutor
    from rstar_math.generators import HFGenerator
    from rstar_math.grading import is_equivalent

    problems = job["problems"]
    executor = SandboxExecutor()
    try:
        generator = HFGenerator(job["policy"], device="cpu", max_batch_size=256, seed=job["seed"])
        config = SearchConfig.from_dict({**SEARCH, "seed": job["seed"]})
        solver = MCTSSolver(generator, executor=executor, config=config)
        t0 = time.perf_counter()
        results = solver.solve_batch([p["question"] for p in problems])
        seconds = time.perf_counter() - t0
    finally:
        executor.close()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rstar_math.data.synthetic import SyntheticProblem, teacher_solution

    tokenizer = AutoTokenizer.from_pretrained(job["policy"])
    model = AutoModelForCausalLM.from_pretrained(job["policy"]).eval()
    solutions = []
    for r, p in zip(results, problems, strict=True):
        # greedy grows one path: its deepest node, finished or not
        path = max(r.tree.trajectories(answers_only=False), key=len, default=None)
        steps = path.steps if path is not None else []
        first, kind = statement_profile(steps, [eq for _, eq in p["meta"]["sentence_equations"]])
        correct = r.answer is not None and is_equivalent(r.answer, p["answer"])
        teacher = teacher_solution(
            SyntheticProblem.from_dict(p), every_sentence=True, numbered=False
        )
        probabilities = teacher_step_probabilities(
            model, tokenizer, p["question"], teacher, SEARCH["temperature"]
        )
        solutions.append(
            {
                "first_wrong": first,
                "kind": kind,
                "correct": correct,
                "step_probabilities": probabilities,
            }
        )
    return {"name": job["name"], "seconds": seconds, **summarise(problems, solutions)}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _chance(x: float | None) -> str:
    """A probability that may be tiny: ``2e-09`` rather than ``0.0%``."""
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if x >= 0.001 else f"{x:.0e}"


def _shown(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (the table is committed)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def render(out: dict[str, Any]) -> str:
    lines = [
        f"Policy `{_shown(out['policy'])}`, greedy decoding, {out['n']} problems per set (seed "
        f"{out['seed']}); `python benchmarks/length_probe.py` ({out['minutes']:.1f} min). A "
        "statement is a code step's equation; it is wrong when it differs from the teacher's "
        "equation for the same sentence. Reach is measured with the teacher's solution fed in "
        "(teacher forcing): the chance that a step's candidates, sampled at temperature "
        f"{SEARCH['temperature']:g}, hold the teacher's step word for word at every step, which "
        "is what even a perfect judge needs (mean over problems); the weakest step is the "
        "teacher step the policy is least likely to write.",
        "",
        "| problem set | hops | distractors | sentences / problem | greedy acc | every sentence "
        "stated right | first wrong statement (median) | first wrong at the 8th or later | "
        "teacher path within reach, 4 / 32 samples per step | weakest teacher step, chance per "
        "sample (median) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in out["sets"].items():
        label, hops, distractors = PROBE_SETS[name][:3]
        median = row["first_wrong_median"]
        lines.append(
            f"| {name}: {label} | {hops[0]}-{hops[1]} | {distractors[0]}-{distractors[1]} | "
            f"{row['sentences']:.1f} | {_pct(row['accuracy'])} | {_pct(row['all_stated'])} | "
            f"{'-' if median is None else f'{median:g}'} | {_pct(row['first_wrong_late'])} | "
            f"{_pct(row.get('reach_4'))} / {_pct(row.get('reach_32'))} | "
            f"{_chance(row.get('weakest_step_median'))} |"
        )
    pooled: dict[int, list[int]] = {}
    for row in out["sets"].values():
        for k, (right, total) in row["by_sentences"].items():
            acc = pooled.setdefault(int(k), [0, 0])
            acc[0] += right
            acc[1] += total
    lines += [
        "",
        "Greedy accuracy by the number of sentences (all sets pooled):",
        "",
        "| sentences | " + " | ".join(str(k) for k in sorted(pooled)) + " |",
        "| --- | " + " | ".join("---:" for _ in pooled) + " |",
        "| accuracy | "
        + " | ".join(f"{_pct(r / t)} ({t})" for r, t in (pooled[k] for k in sorted(pooled)))
        + " |",
    ]
    return "\n".join(lines)


def training_questions(run: Path) -> set[str]:
    """Questions of the build's round-1 and self-evolution problems."""
    out: set[str] = set()
    for name in ("sft_r1.jsonl", "evolve.jsonl"):
        path = run / "data" / name
        if path.is_file():
            out |= {json.loads(line)["question"] for line in path.open() if line.strip()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", help="policy checkpoint (default: the installed built-in model)")
    ap.add_argument("--run-dir", help="build directory whose training questions are left out")
    ap.add_argument("--n", type=int, default=80, help="problems per probe set")
    ap.add_argument("--seed", type=int, default=12345, help="problem and sampling seed")
    ap.add_argument("--sets", default=",".join(PROBE_SETS), help="comma-separated probe sets")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--no-write", action="store_true", help="do not append to docs/benchmarks.md")
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in names if s not in PROBE_SETS]
    if unknown:
        raise SystemExit(f"unknown probe set(s) {unknown}; known: {list(PROBE_SETS)}")
    if args.n < 1:
        raise SystemExit("--n must be >= 1")
    policy = args.policy
    if policy is None:
        from rstar_math.models.builtin import builtin_paths

        paths = builtin_paths()
        if paths is None:
            print("no built-in model installed: give --policy", file=sys.stderr)
            return 1
        policy = paths[0]
    exclude = training_questions(Path(args.run_dir)) if args.run_dir else set()
    jobs = [
        {
            "name": name,
            "policy": policy,
            "seed": args.seed,
            "threads": args.threads,
            "problems": probe_problems(name, args.n, args.seed, exclude),
        }
        for name in names
    ]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = {row["name"]: row for row in pool.map(run_set, jobs)}
    out = {
        "policy": policy,
        "n": args.n,
        "seed": args.seed,
        "minutes": (time.perf_counter() - t0) / 60,
        "sets": {name: rows[name] for name in names},
    }
    body = render(out)
    print(body)
    if not args.no_write:
        append_section("Hops or length (benchmarks/length_probe.py)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
