"""Trees round-trip through JSON losslessly and expose trajectories."""

from __future__ import annotations

import json

import pytest

from rstar_math.tree import StepKind, TerminalKind, Tree


def build_tree() -> Tree:
    tree = Tree("What is 2+2?", reference="4")
    a = tree.add_child(tree.root, text="<code>\nx = 2 + 2\n<end_of_step>", kind=StepKind.CODE)
    a.code = "x = 2 + 2"
    a.visits, a.value_sum, a.ppm_value = 3, 1.0, 0.25
    p = tree.add_child(
        a, text="\nprint(x)\n<end_of_code>", kind=StepKind.FINAL_CODE, code="print(x)"
    )
    p.output = "4\n"
    ans = tree.add_child(p, text="<answer>\\boxed{4}<end_of_answer>", kind=StepKind.ANSWER)
    ans.answer, ans.grade = "4", True
    ans.terminal, ans.terminal_value = TerminalKind.ANSWER, 1.0
    bad = tree.add_child(tree.root, text="<code>\n1/0\n<end_of_step>", kind=StepKind.CODE)
    bad.exec_ok, bad.error_type, bad.error_message = False, "ZeroDivisionError", "division by zero"
    bad.terminal, bad.terminal_value = TerminalKind.CODE_ERRORS, -1.0
    bad.consecutive_errors = 1
    tree.meta["seed"] = 7
    return tree


def test_json_round_trip_is_lossless() -> None:
    tree = build_tree()
    text = tree.to_json()
    again = Tree.from_json(text)
    assert again.to_dict() == tree.to_dict()
    assert json.loads(again.to_json()) == json.loads(text)
    node = again.nodes[3]
    assert node.answer == "4" and node.grade is True and node.terminal is TerminalKind.ANSWER
    assert again.nodes[1].ppm_value == 0.25 and again.nodes[1].q == pytest.approx(1 / 3)
    assert again.nodes[4].error_type == "ZeroDivisionError" and again.nodes[2].output == "4\n"


def test_trajectories_and_pretty() -> None:
    tree = build_tree()
    (traj,) = tree.trajectories()
    assert traj.answer == "4" and traj.correct is True and traj.value == 1.0
    assert traj.program == "x = 2 + 2\nprint(x)"
    assert "<output>4<end_of_output>" in traj.text
    assert len(tree.trajectories(answers_only=False)) == 2
    assert tree.best_trajectory() is not None
    pretty = traj.pretty()
    assert "What is 2+2?" in pretty and "answer='4'" in pretty


def test_malformed_tree_records_raise() -> None:
    with pytest.raises(ValueError, match="'question' and 'nodes'"):
        Tree.from_dict({"nodes": []})
    data = build_tree().to_dict()
    del data["nodes"][1]["depth"]
    with pytest.raises(ValueError, match="depth"):
        Tree.from_dict(data)
    data = build_tree().to_dict()
    data["format_version"] = 99
    with pytest.raises(ValueError, match="newer"):
        Tree.from_dict(data)
