"""Reference-checked PPM pairs: each proposed step is labelled by running it after the reference.

The policy is scripted here (its proposals are the input under test); the executor is the real
sandbox, since labels come from what the code really binds. One test runs a real tiny model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from rstar_math.executors.sandbox import SandboxExecutor
from rstar_math.format import PromptTemplate
from rstar_math.generators.scripted import ScriptedGenerator
from rstar_math.training import (
    PreferencePair,
    ReferencePairsConfig,
    SFTRecord,
    bound_names,
    reference_step_pairs,
    split_step_chunks,
)

QUESTION = "Ann has 5 apples. Ben has 3 more apples than Ann. How many apples does Ben have?"
STEP1 = "<code>\n# Step 1: Ann has 5 apples\nann = 5\n<end_of_step>"
STEP2 = "\n\n# Step 2: Ben has 3 more than Ann\nben = ann + 3\n<end_of_step>"
FINAL = "\n\n# Now print the final answer\nprint(ben)\n<end_of_code>\n<output>8<end_of_output>\n"
ANSWER = "<answer>The answer is \\boxed{8}.<end_of_answer>"
REFERENCE = STEP1 + STEP2 + FINAL + ANSWER

#: what the "policy" proposes after each prefix (the longest matching prompt end wins)
PROPOSALS = {
    "": [
        STEP1,  # the reference step itself: not a proposal of its own
        "<code>\n# Step 1: Ann has five apples\nann = 5\n<end_of_step>",  # right, other words
        "<code>\n# Step 1: Ann has 3 apples\nann = 3\n<end_of_step>",  # wrong number
    ],
    "ann = 5\n<end_of_step>": [
        "\n\n# Step 2: Ben has 3 fewer than Ann\nben = ann - 3\n<end_of_step>",  # flipped
        "\n\n# Step 2: let me think\n<end_of_step>",  # binds nothing: no label
        "\n\n# Step 2: the cake\ncake = 8\n<end_of_step>",  # a name the reference never binds
        "\n\n# Step 2: Ben\nben = anne + 3\n<end_of_step>",  # NameError
    ],
    "ben = ann + 3\n<end_of_step>": [
        "\n\n# Now print the final answer\nprint(ann)\n<end_of_code>",  # prints the wrong value
        "\n\n# Print it\nprint(ben)\n<end_of_code>",  # right
        "\n\n# Now print the final answer\nprint(ben",  # cut off: invalid
        "\n\n# Now print the final answer\nprint(benn)\n<end_of_code>",  # fails
    ],
}


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    ex = SandboxExecutor(num_workers=1)
    yield ex
    ex.close()


def by_step(pairs: list[PreferencePair]) -> dict[int, PreferencePair]:
    return {p.meta["step"]: p for p in pairs}


def test_labels_follow_what_each_step_binds(executor: SandboxExecutor) -> None:
    gen = ScriptedGenerator(PROPOSALS)
    result = reference_step_pairs([{"question": QUESTION, "response": REFERENCE}], gen, executor)
    pairs = by_step(result.pairs)
    assert sorted(pairs) == [0, 1, 2]  # one pair per code step of the reference, none at the answer

    root = pairs[0]
    assert root.prefix_steps == []
    assert root.pos == [STEP1, PROPOSALS[""][1]]
    assert root.neg == [PROPOSALS[""][2]]

    second = pairs[1]
    assert second.prefix_steps == [STEP1]
    assert second.pos == [STEP2]
    # num_neg=2 keeps the first two wrong steps; the NameError one is counted but not kept
    assert second.neg == PROPOSALS["ann = 5\n<end_of_step>"][0:3:2]

    final = pairs[2]
    assert final.prefix_steps == [STEP1, STEP2]
    # a proposed final code step carries its output, as in a search tree's chunks
    assert final.pos == [
        FINAL,
        "\n\n# Print it\nprint(ben)\n<end_of_code>\n<output>8<end_of_output>\n",
    ]
    assert final.neg == [
        "\n\n# Now print the final answer\nprint(ann)\n<end_of_code>\n<output>5<end_of_output>\n",
        # a failed final step keeps its (empty) output block, as in a tree
        "\n\n# Now print the final answer\nprint(benn)\n<end_of_code>\n<output><end_of_output>\n",
    ]
    assert all(p.level == "step" and p.meta["source"] == "reference" for p in result.pairs)

    assert result.summary() == {
        "pairs": 3,
        "problems": 1,
        "skipped_problems": 0,
        "prefixes": 3,
        "proposals": 9,
        "invalid": 1,
        "right": 2,
        "wrong": 6,
        "unlabeled": 1,
    }


def test_prompts_are_the_reference_prefixes(executor: SandboxExecutor) -> None:
    gen = ScriptedGenerator(PROPOSALS)
    cfg = ReferencePairsConfig(samples=3, temperature=0.9, max_step_tokens=77, seed=5)
    reference_step_pairs([SFTRecord(QUESTION, REFERENCE)], gen, executor, cfg)
    prompt = PromptTemplate.sft().render(QUESTION)
    assert [r.prompt for r in gen.requests] == [prompt, prompt + STEP1, prompt + STEP1 + STEP2]
    assert {(r.n, r.temperature, r.max_tokens) for r in gen.requests} == {(3, 0.9, 77)}
    assert len({r.seed for r in gen.requests}) == 3  # every prefix samples with its own seed


def test_without_reference_positives_need_a_right_proposal(executor: SandboxExecutor) -> None:
    gen = ScriptedGenerator(PROPOSALS)
    cfg = ReferencePairsConfig(include_reference=False)
    result = reference_step_pairs(
        [{"question": QUESTION, "solution": REFERENCE}], gen, executor, cfg
    )
    # the second step had no right proposal, so it gives no pair
    assert sorted(by_step(result.pairs)) == [0, 2]
    assert by_step(result.pairs)[0].pos == [PROPOSALS[""][1]]


def test_one_broken_reference_does_not_lose_the_others(executor: SandboxExecutor) -> None:
    broken = REFERENCE.replace("ben = ann + 3", "ben = ann / 0")
    no_answer = REFERENCE.replace(ANSWER, "")
    records = [
        {"question": "broken", "response": broken},
        {"question": "unanswered", "response": no_answer},
        {"question": QUESTION, "response": REFERENCE},
    ]
    result = reference_step_pairs(records, ScriptedGenerator(PROPOSALS), executor)
    assert result.problems == 3 and result.skipped_problems == 2
    assert {p.question for p in result.pairs} == {QUESTION}
    assert len(result.pairs) == 3


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"question": QUESTION}, "'response'"),
        ({"response": REFERENCE}, "'question'"),
        ("not a record", "not a mapping"),
    ],
)
def test_bad_records_are_named(executor: SandboxExecutor, record: Any, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        reference_step_pairs([record], ScriptedGenerator(PROPOSALS), executor)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="samples"):
        ReferencePairsConfig(samples=0)
    with pytest.raises(ValueError, match="top_p"):
        ReferencePairsConfig(top_p=0)


def test_bound_names() -> None:
    assert bound_names("a = 1\nb, (c, d) = 1, (2, 3)\na += 1\ne: int = 4") == [
        "a",
        "b",
        "c",
        "d",
        "e",
    ]
    assert bound_names("print(a)\nx.y = 3\nz[0] = 1") == []
    assert bound_names("a = (") is None


def test_real_policy_proposals_are_labelled_by_running_them(
    executor: SandboxExecutor, tiny_trained_policy_dir: Any
) -> None:
    """A real tiny model sampling hot: whatever it proposes, every pair is consistent."""
    from rstar_math.generators.hf import HFGenerator

    from .conftest import TINY_PROBLEMS

    gen = HFGenerator(tiny_trained_policy_dir, device="cpu", seed=0)
    records = [{"question": q, "response": s} for q, s, _ in TINY_PROBLEMS]
    cfg = ReferencePairsConfig(samples=6, temperature=1.5, max_step_tokens=48)
    result = reference_step_pairs(records, gen, executor, cfg)
    assert result.skipped_problems == 0
    assert result.proposals + result.invalid > 0
    assert result.right + result.wrong + result.unlabeled == result.proposals
    references = {q: split_step_chunks(s) for q, s, _ in TINY_PROBLEMS}
    for pair in result.pairs:
        chunks = references[pair.question]
        k = pair.meta["step"]
        assert pair.prefix_steps == chunks[:k]
        assert pair.pos[0] == chunks[k]
        assert chunks[k] not in pair.neg


@pytest.mark.slow
@pytest.mark.hf
def test_the_ref_pairs_command_writes_pairs_train_ppm_reads(
    tmp_path: Any, tiny_trained_policy_dir: Any
) -> None:
    import json
    import subprocess
    import sys

    from rstar_math.training import read_pairs

    from .conftest import TINY_PROBLEMS

    solutions = tmp_path / "solutions.jsonl"
    solutions.write_text(
        "".join(json.dumps({"question": q, "response": s}) + "\n" for q, s, _ in TINY_PROBLEMS)
    )
    out = tmp_path / "pairs.jsonl"
    args = ["--model", str(tiny_trained_policy_dir), "--output", str(out), "--device", "cpu"]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "rstar_math.cli",
            "ref-pairs",
            str(solutions),
            *args,
            "--samples",
            "6",
            "--temperature",
            "1.5",
            "--seed",
            "1",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    pairs = list(read_pairs(out))
    assert f"{len(pairs)} pairs from {len(TINY_PROBLEMS)} reference solutions (0 skipped)" in (
        res.stdout
    )
    assert all(p.meta["source"] == "reference" for p in pairs)


EQ_QUESTION = "Ben has 3 more apples than Ann. Ann has 5 apples. How many apples does Ben have?"
EQ_STEP1 = (
    "<code>\n# Step 1: Ben has 3 more apples than Ann.\nfrom sympy import symbols, Eq, solve\n"
    "eqs = []\nben, ann = symbols('ben ann')\neqs.append(Eq(ben, ann + 3))\n<end_of_step>"
)
EQ_STEP2 = (
    "\n\n# Step 2: Ann has 5 apples.\nann = symbols('ann')\neqs.append(Eq(ann, 5))\n<end_of_step>"
)
EQ_FINAL = (
    "\n\n# Now print the final answer\nprint(solve(eqs, dict=True)[0][ben])\n<end_of_code>\n"
    "<output>8<end_of_output>\n"
)
EQ_REFERENCE = EQ_STEP1 + EQ_STEP2 + EQ_FINAL + ANSWER
EQ_SETUP = (
    "<code>\n# Step 1: Ben has 3 more apples than Ann.\nfrom sympy import symbols, Eq, solve\n"
)
EQ_PROPOSALS = {
    "": [
        # the same equation the other way round: right (it also starts eqs = [], a value the
        # finished reference's list does not have, which must not count against it)
        EQ_SETUP + "eqs = []\nben, ann = symbols('ben ann')\neqs.append(Eq(ann, ben - 3))\n"
        "<end_of_step>",
        # "3 fewer": a well-formed equation that does not hold at the reference's values
        EQ_SETUP + "eqs = []\nben, ann = symbols('ben ann')\neqs.append(Eq(ben, ann - 3))\n"
        "<end_of_step>",
    ],
    "eqs.append(Eq(ben, ann + 3))\n<end_of_step>": [
        "\n\n# Step 2: Ann has 5 apples.\nann = symbols('ann')\neqs.append(Eq(ann, 3))\n"
        "<end_of_step>",  # wrong number
        "\n\n# Step 2: Ann has 5 apples.\ncake = symbols('cake')\neqs.append(Eq(cake, 5))\n"
        "<end_of_step>",  # a quantity the reference never names
        "\n\n# Step 2: Ann has 5 apples.\neqs.append(Eq(5, 5))\n<end_of_step>",  # states nothing
        "\n\n# Step 2: Ann has 5 apples.\nann = symbols('ann')\n"
        "eqs.append(Eq(2 * ann, 10))\n<end_of_step>",  # right, written otherwise
    ],
    "eqs.append(Eq(ann, 5))\n<end_of_step>": [
        "\n\n# Now print the final answer\nprint(solve(eqs, dict=True)[0][ann])\n<end_of_code>",
    ],
}


def test_equation_steps_are_judged_by_what_they_state(executor: SandboxExecutor) -> None:
    gen = ScriptedGenerator(EQ_PROPOSALS)
    record = {"question": EQ_QUESTION, "response": EQ_REFERENCE}
    result = reference_step_pairs([record], gen, executor)
    pairs = by_step(result.pairs)
    assert sorted(pairs) == [0, 1, 2]
    assert pairs[0].pos == [EQ_STEP1, EQ_PROPOSALS[""][0]]
    assert pairs[0].neg == [EQ_PROPOSALS[""][1]]
    second = EQ_PROPOSALS["eqs.append(Eq(ben, ann + 3))\n<end_of_step>"]
    assert pairs[1].pos == [EQ_STEP2, second[3]]
    assert pairs[1].neg == second[:2]  # num_neg=2: the third wrong one is counted, not kept
    assert pairs[2].pos[0] == EQ_FINAL.split("\n<output>")[0] + "\n<output>8<end_of_output>\n"
    assert pairs[2].neg[0].endswith("<output>5<end_of_output>\n")  # printed Ann's apples
    assert (result.right, result.wrong, result.unlabeled) == (2, 5, 0)


def test_equation_judging_can_be_turned_off(executor: SandboxExecutor) -> None:
    """Without it, an equation reference is judged by the symbols it binds, which every
    well-named step binds alike: the wrong number then counts as right."""
    gen = ScriptedGenerator(EQ_PROPOSALS)
    record = {"question": EQ_QUESTION, "response": EQ_REFERENCE}
    result = reference_step_pairs([record], gen, executor, ReferencePairsConfig(equations=None))
    second = EQ_PROPOSALS["eqs.append(Eq(ben, ann + 3))\n<end_of_step>"]
    assert second[0] in by_step(result.pairs)[1].pos
    with pytest.raises(ValueError, match="equations"):
        ReferencePairsConfig(equations="not a name")


ST_QUESTION = "Ben has 3 more apples than Ann. Ann has 5 apples. How many apples does Ben have?"
ST_STEP1 = (
    "<code>\n# Ben has 3 more apples than Ann.\neqs = []\neqs.append('ben = ann + 3')\n"
    "<end_of_step>"
)
ST_STEP2 = "\n\n# Ann has 5 apples.\neqs.append('ann = 5')\n<end_of_step>"
ST_FINAL = (
    "\n\n# Now print the final answer\nfrom sympy import solve, sympify\n"
    "sol = solve([sympify('Eq(' + e.replace('=', ',') + ')') for e in eqs], dict=True)[0]\n"
    "print(sol[sympify('ben')])\n<end_of_code>\n<output>8<end_of_output>\n"
)
ST_PROPOSALS = {
    "": [
        "<code>\n# Ben has 3 more apples than Ann.\neqs = []\neqs.append('ann + 3 = ben')\n"
        "<end_of_step>",  # the same statement, sides swapped: right
        "<code>\n# Ben has 3 more apples than Ann.\neqs = []\neqs.append('ben = ann - 3')\n"
        "<end_of_step>",  # flipped
        "<code>\n# Ann has 5 apples.\neqs = []\neqs.append('ann = 5')\n<end_of_step>",  # skips one
    ],
    "eqs.append('ben = ann + 3')\n<end_of_step>": [
        # the first sentence again
        "\n\n# Ben has 3 more apples than Ann.\neqs.append('ben = ann + 3')\n<end_of_step>",
        "\n\n# Ann has 5 apples.\neqs.append('2 * ann = 10')\n<end_of_step>",  # right
        "\n\n# Ann has 5 apples.\nprint(eqs)\n<end_of_step>",  # not a statement: wrong
    ],
    "eqs.append('ann = 5')\n<end_of_step>": [
        ST_FINAL.replace("sympify('ben')", "sympify('ann')").split("\n<output>")[0],  # prints 5
    ],
}


def test_every_sentence_steps_are_judged_by_the_statement_at_their_place(
    executor: SandboxExecutor,
) -> None:
    """A true fact in the wrong place (the next sentence, the last one again) is wrong: the
    reference states one equation per sentence, in order."""
    gen = ScriptedGenerator(ST_PROPOSALS)
    record = {"question": ST_QUESTION, "response": ST_STEP1 + ST_STEP2 + ST_FINAL + ANSWER}
    config = ReferencePairsConfig(statements=True)
    result = reference_step_pairs([record], gen, executor, config)
    pairs = by_step(result.pairs)
    assert sorted(pairs) == [0, 1, 2]
    assert pairs[0].pos == [ST_STEP1, ST_PROPOSALS[""][0]]
    assert pairs[0].neg == ST_PROPOSALS[""][1:]
    second = ST_PROPOSALS["eqs.append('ben = ann + 3')\n<end_of_step>"]
    assert pairs[1].pos == [ST_STEP2, second[1]]
    assert pairs[1].neg == [second[0], second[2]]
    assert pairs[2].neg[0].endswith("<output>5<end_of_output>\n")  # the final step still runs
    assert (result.right, result.wrong) == (2, 5)
    # judged by running them, the skipped and the repeated sentence would count as right
    plain = by_step(reference_step_pairs([record], gen, executor).pairs)
    assert ST_PROPOSALS[""][2] not in plain.get(0, pairs[0]).neg
