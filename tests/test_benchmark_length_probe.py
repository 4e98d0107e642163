"""``benchmarks/length_probe.py``: its probe sets, where it finds a solution wrong, its table."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "benchmarks" / "length_probe.py"


def _probe() -> ModuleType:
    sys.path.insert(0, str(PROBE.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_length_probe", PROBE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(PROBE.parent))
    return module


def _teacher(problem: dict) -> list[str]:
    from rstar_math.data.synthetic import SyntheticProblem, teacher_solution
    from rstar_math.format import split_solution

    solution = teacher_solution(SyntheticProblem.from_dict(problem), every_sentence=True)
    return [s.text for s in split_solution(solution)]


def test_the_probe_sets_vary_hops_and_length_one_at_a_time() -> None:
    """Each set's problems have the hops and the sentence counts its row claims: hard's hops
    with training's length, and training's hops with hard's length."""
    probe = _probe()
    sets = {name: probe.probe_problems(name, 12, seed=3) for name in probe.PROBE_SETS}
    sentences = {
        name: sum(len(p["meta"]["sentence_equations"]) for p in ps) / len(ps)
        for name, ps in sets.items()
    }
    level3, hard = sentences[next(iter(sets))], sentences[list(sets)[-1]]
    assert sentences["hard-length"] > level3 + 2
    assert abs(sentences["hard-length"] - hard) < 1.5
    assert sentences["more-hops"] < hard - 2
    assert all(len(ps) == 12 for ps in sets.values())


def test_probe_problems_leave_out_the_questions_a_build_trained_on() -> None:
    probe = _probe()
    name = "hard-hops"
    drawn = probe.probe_problems(name, 4, seed=1)
    kept = probe.probe_problems(name, 4, seed=1, exclude={drawn[0]["question"]})
    assert [p["question"] for p in kept[:3]] == [p["question"] for p in drawn[1:]]
    assert len(kept) == 4 and drawn[0]["question"] not in {p["question"] for p in kept}


def test_the_statement_profile_names_the_first_sentence_stated_wrong() -> None:
    probe = _probe()
    problem = probe.probe_problems("more-hops", 1, seed=5)[0]
    reference = [eq for _, eq in problem["meta"]["sentence_equations"]]
    steps = _teacher(problem)
    assert probe.statement_profile(steps, reference) == (None, "none")
    k = 2
    lhs, rhs = reference[k].split(" = ", 1)
    wrong = steps[k].replace(reference[k], f"{lhs} = {rhs} + 1")
    assert probe.statement_profile([*steps[:k], wrong, *steps[k + 1 :]], reference) == (
        k,
        "wrong equation",
    )
    # the final (solving) step written after only k sentences
    final = next(s for s in steps if "<end_of_code>" in s)
    assert probe.statement_profile([*steps[:k], final], reference) == (k, "stopped early")
    assert probe.statement_profile([*steps[:k], "<code>\nx = 1\n<end_of_step>"], reference)[0] == k


def test_the_table_pools_accuracy_by_sentence_count() -> None:
    probe = _probe()
    names = list(probe.PROBE_SETS)[:2]
    problems = {n: probe.probe_problems(n, 3, seed=2) for n in names}
    rows = {}
    for i, name in enumerate(names):
        solutions = [
            {
                "first_wrong": None if j < i + 1 else 7,
                "kind": "none" if j < i + 1 else "wrong equation",
                "correct": j < i + 1,
            }
            for j in range(3)
        ]
        rows[name] = probe.summarise(problems[name], solutions)
    assert rows[names[0]]["accuracy"] == pytest.approx(1 / 3)
    assert rows[names[1]]["first_wrong_median"] == 8 and rows[names[1]]["first_wrong_late"] == 1
    out = {"policy": str(REPO / "build" / "p"), "n": 3, "seed": 2, "minutes": 0.1, "sets": rows}
    body = probe.render(out)
    assert "Policy `build/p`" in body  # the committed table names no machine's paths
    assert all(name in body for name in names)
    pooled_total = sum(total for row in rows.values() for _, total in row["by_sentences"].values())
    assert pooled_total == 6
    assert "| accuracy |" in body


def test_unknown_probe_sets_are_refused_by_name() -> None:
    probe = _probe()
    with pytest.raises(SystemExit, match=r"unknown probe set\(s\) \['level9'\]; known"):
        probe.main(["--sets", f"{','.join(probe.PROBE_SETS)},level9", "--policy", "P"])


@pytest.mark.sandbox
def test_a_probe_set_runs_greedy_on_a_real_policy(tiny_trained_policy_dir: Path) -> None:
    """The tiny test policy writes no sentence equations: every solution is wrong at the first
    sentence, and the row counts each problem once."""
    probe = _probe()
    name = "hard-hops"
    job = {
        "name": name,
        "policy": str(tiny_trained_policy_dir),
        "seed": 0,
        "threads": 1,
        "problems": probe.probe_problems(name, 2, seed=0),
    }
    row = probe.run_set(job)
    assert row["n"] == 2 and row["accuracy"] == 0
    assert row["all_stated"] == 0 and row["first_wrong_median"] == 1
    assert sum(row["kinds"].values()) == 2
    assert sum(total for _, total in row["by_sentences"].values()) == 2
    # it cannot write the teacher's steps either, and more samples per step reach no less
    assert 0 <= row["reach_4"] <= row["reach_32"] < 0.01
    assert row["weakest_step_median"] < 0.01


def test_reach_is_the_chance_that_every_step_has_the_teacher_among_its_samples() -> None:
    probe = _probe()
    assert probe.reach([1.0, 1.0], 4) == 1.0
    assert probe.reach([0.5], 1) == pytest.approx(0.5)
    assert probe.reach([0.5], 2) == pytest.approx(0.75)
    assert probe.reach([0.5, 0.5], 1) == pytest.approx(0.25)
    assert probe.reach([1.0, 1e-9], 32) < 1e-7


class _UniformModel:
    """Logits that are equal for every token: each token has probability 1 / vocab, so a
    step's probability reveals how many of its tokens were counted."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def __call__(self, ids: Any) -> SimpleNamespace:
        import torch

        return SimpleNamespace(logits=torch.zeros(1, ids.shape[1], self.vocab))


def test_teacher_step_probabilities_count_each_step_and_not_the_executor_output(
    tiny_tokenizer: Any,
) -> None:
    """One probability per code step plus the answer; the output the executor writes between
    the final code step and the answer is left out of both."""
    probe = _probe()
    problem = probe.probe_problems("level3", 1, seed=4)[0]
    from rstar_math.data.synthetic import SyntheticProblem, teacher_solution
    from rstar_math.format import ANSWER_START, CODE_END, split_solution

    solution = teacher_solution(
        SyntheticProblem.from_dict(problem), every_sentence=True, numbered=False
    )
    vocab = len(tiny_tokenizer)
    probabilities = probe.teacher_step_probabilities(
        _UniformModel(vocab), tiny_tokenizer, problem["question"], solution, temperature=0.7
    )
    code_steps = len(split_solution(solution)) - 1  # the last parsed step holds the answer
    assert len(probabilities) == code_steps + 1
    tokens = [round(-math.log(p) / math.log(vocab)) for p in probabilities]
    encoded = tiny_tokenizer(solution, add_special_tokens=False, return_offsets_mapping=True)
    code_end = solution.index(CODE_END) + len(CODE_END)
    answer = solution.index(ANSWER_START)
    written = [s for s, _ in encoded["offset_mapping"] if not code_end <= s < answer]
    assert sum(tokens) == len(written) < len(encoded["input_ids"])
    assert tokens[-1] == sum(s >= answer for s, _ in encoded["offset_mapping"])
