"""The code-augmented CoT format, tested on the reference's real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rstar_math.format import (
    ANSWER_END,
    CODE_END,
    STEP_END,
    PromptTemplate,
    extract_boxed,
    extract_program,
    parse_step,
    render_steps,
    split_solution,
)
from rstar_math.tree import Node, StepKind

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rstar"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data/rstar is absent")


def _sft_records() -> list[dict[str, str]]:
    return json.loads((DATA / "sft_data_examples.json").read_text()) if DATA.is_dir() else []


def _few_shots() -> list[str]:
    return json.loads((DATA / "few_shots.json").read_text()) if DATA.is_dir() else []


def test_parse_step_by_stop_marker() -> None:
    step = parse_step("<code>\n# Step 1\nx = 2\n", STEP_END)
    assert step.kind is StepKind.CODE and step.code == "# Step 1\nx = 2"
    assert step.text.endswith(STEP_END)
    final = parse_step("\nprint(x)\n", CODE_END)
    assert final.kind is StepKind.FINAL_CODE and final.code == "print(x)"
    ans = parse_step("<answer>So \\boxed{\\frac{1}{2}}.", ANSWER_END)
    assert ans.kind is StepKind.ANSWER and ans.answer == "\\frac{1}{2}" and ans.code == ""
    assert parse_step("x = 1", None).kind is StepKind.INVALID
    assert parse_step("<answer>cut \\boxed{3", None).kind is StepKind.INVALID


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{5}", "5"),
        ("a \\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{a}{b^{2}}}", "\\frac{a}{b^{2}}"),
        ("\\boxed 5", "5"),
        ("\\fbox{x+1}", "x+1"),
        ("\\boxed{\\left( 1, \\{2\\} \\right)}", "\\left( 1, \\{2\\} \\right)"),
        ("no answer here", None),
        ("\\boxed{unbalanced", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_prompt_templates() -> None:
    sft = PromptTemplate.sft().render("What is 1+1?")
    assert sft.startswith("<|user|>:\nWhat is 1+1?\n<|assistant|>: Let's think step by step")
    shot = PromptTemplate.few_shot(["Question: q\n<code>\nprint(1)\n<end_of_code>"]).render("Q?")
    assert "Question: q" in shot and shot.rstrip().endswith("Question: Q?")
    custom = PromptTemplate(suffix="Solve: {input}\n").render("2x=4")
    assert custom == "Solve: 2x=4\n"
    with pytest.raises(ValueError, match="placeholder"):
        PromptTemplate(suffix="no slot")


@needs_data
def test_reference_prompt_files_load() -> None:
    tpl = PromptTemplate.from_reference_json(DATA / "mcts_prompt.json", DATA / "few_shots.json")
    text = tpl.render("What is 3+4?")
    assert text.count("Question:") >= len(_few_shots()) + 1
    assert "Now! It's your turn.\nQuestion: What is 3+4?" in text
    sft = PromptTemplate.from_reference_json(DATA / "sft_prompt.json").render("Q")
    assert sft.strip() == PromptTemplate.sft().render("Q").strip()


@needs_data
@pytest.mark.parametrize("index", range(8))
def test_every_sft_record_splits_into_valid_steps(index: int) -> None:
    records = _sft_records()
    if index >= len(records):
        pytest.skip("fewer records")
    response = records[index]["response"]
    steps = split_solution(response)
    kinds = [s.kind for s in steps]
    assert kinds[-1] is StepKind.ANSWER and kinds[-2] is StepKind.FINAL_CODE
    assert all(k is StepKind.CODE for k in kinds[:-2])
    assert steps[0].text.lstrip().startswith("<code>")
    assert steps[-1].answer == extract_boxed(response)
    program = extract_program(response)
    assert "<end_of_step>" not in program and "<code>" not in program
    compile(program, "<sft>", "exec")  # every program is valid Python
    # rendering the parsed steps with the recorded output reproduces the response
    recorded = response.split("<output>", 1)[1].split("<end_of_output>", 1)[0]
    nodes = []
    for i, s in enumerate(steps):
        n = Node(i + 1, i, i + 1, text=s.text, kind=s.kind, code=s.code)
        nodes.append(n)
    nodes[-2].output = recorded
    assert _squash(render_steps(nodes)) == _squash(response)


@needs_data
def test_every_few_shot_splits_into_valid_steps() -> None:
    for shot in _few_shots():
        solution = shot[shot.index("<code>") :]
        steps = split_solution(solution)
        assert steps[-1].kind is StepKind.ANSWER and steps[-1].answer
        assert steps[-2].kind is StepKind.FINAL_CODE
        assert "# Now print the final answer" in steps[-2].code
        compile(extract_program(solution), "<shot>", "exec")


def _squash(text: str) -> str:
    return "".join(text.split())
