"""Pair extraction and SFT selection on hand-built trees with known Q values."""

from __future__ import annotations

import pytest

from rstar_math.format import step_chunks
from rstar_math.training import extract_pairs, select_sft, subtree_outcomes
from rstar_math.tree import Node, StepKind, TerminalKind, Tree

CORRECT, WRONG = True, False


def add(
    tree: Tree,
    parent: Node,
    name: str,
    q: float,
    kind: StepKind = StepKind.CODE,
    *,
    exec_ok: bool = True,
    terminal: TerminalKind | None = None,
    grade: bool | None = None,
    output: str = "",
    visits: int = 1,
) -> Node:
    """A child whose Q is exactly ``q`` (value_sum = q * visits)."""
    if kind is StepKind.ANSWER:
        text = f"<answer>{name} \\boxed{{{name}}}<end_of_answer>"
        terminal = terminal or TerminalKind.ANSWER
    elif kind is StepKind.FINAL_CODE:
        text = f"\n# {name}\nprint(x)\n<end_of_code>"
    elif kind is StepKind.INVALID:
        text = f"\n# {name} cut"
    else:
        text = f"\n# {name}\nx = 1\n<end_of_step>"
    node = tree.add_child(parent, text=text, kind=kind, code="x = 1")
    node.visits = visits
    node.value_sum = q * visits
    node.exec_ok = exec_ok
    node.terminal = terminal
    node.grade = grade
    node.output = output
    if kind is StepKind.ANSWER:
        node.answer = name
    return node


@pytest.fixture
def tree() -> tuple[Tree, dict[str, Node]]:
    """
    root
    ├─ a   CODE q=+0.6  -> a_f (FINAL q=+0.8, prints 7) -> a_f_ok  (ANSWER correct, q=+1)
    │                   -> a_g (FINAL q=-0.5, prints 8) -> a_g_bad (ANSWER wrong,   q=-1)
    ├─ b   CODE q=+0.9 exec FAILED -> b_ok (ANSWER correct, q=+1)     never a positive
    ├─ c   CODE q=+0.2  -> c_ok (ANSWER correct, q=+1), c_bad (ANSWER wrong, q=-1)
    ├─ d   CODE q=-0.8  -> d_bad (ANSWER wrong, q=-1)                  only wrong
    ├─ e   CODE q=-0.3  terminal MAX_DEPTH                             only wrong
    ├─ inv INVALID q=-1.0 terminal NO_VALID_CHILD                      never used
    ├─ g   CODE q=-0.9 exec FAILED, terminal CODE_ERRORS               only wrong
    └─ h   CODE q=0.0  (no terminal below: unknown)                    never used
    """
    t = Tree("What is 3 + 4?", reference="7")
    r = t.root
    n: dict[str, Node] = {}
    n["a"] = add(t, r, "a", 0.6)
    n["b"] = add(t, r, "b", 0.9, exec_ok=False)
    n["c"] = add(t, r, "c", 0.2)
    n["d"] = add(t, r, "d", -0.8)
    n["e"] = add(t, r, "e", -0.3, terminal=TerminalKind.MAX_DEPTH)
    n["inv"] = add(t, r, "inv", -1.0, StepKind.INVALID, terminal=TerminalKind.NO_VALID_CHILD)
    n["g"] = add(t, r, "g", -0.9, exec_ok=False, terminal=TerminalKind.CODE_ERRORS)
    n["h"] = add(t, r, "h", 0.0)
    n["a_f"] = add(t, n["a"], "a_f", 0.8, StepKind.FINAL_CODE, output="7\n")
    n["a_g"] = add(t, n["a"], "a_g", -0.5, StepKind.FINAL_CODE, output="8\n")
    n["a_f_ok"] = add(t, n["a_f"], "7", 1.0, StepKind.ANSWER, grade=CORRECT)
    n["a_g_bad"] = add(t, n["a_g"], "8", -1.0, StepKind.ANSWER, grade=WRONG)
    n["b_ok"] = add(t, n["b"], "7", 1.0, StepKind.ANSWER, grade=CORRECT)
    n["c_ok"] = add(t, n["c"], "7", 1.0, StepKind.ANSWER, grade=CORRECT)
    n["c_bad"] = add(t, n["c"], "6", -1.0, StepKind.ANSWER, grade=WRONG)
    n["d_bad"] = add(t, n["d"], "5", -1.0, StepKind.ANSWER, grade=WRONG)
    return t, n


def chunk(tree: Tree, node: Node) -> str:
    return step_chunks(tree.path(node))[-1]


def full(tree: Tree, node: Node) -> str:
    return "".join(step_chunks(tree.path(node)))


def test_subtree_outcomes(tree):
    t, n = tree
    out = subtree_outcomes(t)
    assert (out[0].correct, out[0].wrong) == (3, 6)
    assert out[n["a"].id].reaches_correct and not out[n["a"].id].only_wrong
    assert out[n["d"].id].only_wrong and out[n["e"].id].only_wrong and out[n["g"].id].only_wrong
    assert not out[n["h"].id].reaches_correct and not out[n["h"].id].only_wrong


def test_step_and_answer_pairs_exact(tree):
    t, n = tree
    pairs = extract_pairs(t)
    assert [(p.level, p.meta["node_id"]) for p in pairs] == [
        ("step", 0),
        ("step", n["a"].id),
        ("answer", 0),
    ]
    root, at_a, answer = pairs

    # root: b (q=0.9) reaches a correct answer but failed to execute -> not a positive;
    # top-2 positives a (0.6), c (0.2); bottom-2 negatives g (-0.9, failed: fine as a negative),
    # d (-0.8); the INVALID child (-1.0) and the unexplored h are never used.
    assert root.question == "What is 3 + 4?"
    assert root.prefix_steps == []
    assert root.pos == [n["a"].text, n["c"].text]
    assert root.neg == [n["g"].text, n["d"].text]
    assert root.meta["pos_ids"] == [n["a"].id, n["c"].id]
    assert root.meta["neg_ids"] == [n["g"].id, n["d"].id]
    assert root.meta["pos_q"] == [0.6, 0.2]
    assert root.meta["neg_q"] == [-0.9, -0.8]
    assert root.num_combos == 4

    # under a: the final code steps, each with its <output> block spliced in
    assert at_a.prefix_steps == [n["a"].text]
    assert at_a.pos == [n["a_f"].text + "\n<output>7<end_of_output>\n"]
    assert at_a.neg == [n["a_g"].text + "\n<output>8<end_of_output>\n"]
    assert at_a.pos == [chunk(t, n["a_f"])]

    # answer level: correct trajectories a-a_f-ok (mean 0.8) and c-ok (mean 0.6); b-ok has a
    # failed step. Wrong ones by mean Q: d-bad (-0.9), c-bad (-0.4), a-g-bad (-0.233).
    assert answer.prefix_steps == []
    assert answer.pos == [full(t, n["a_f_ok"]), full(t, n["c_ok"])]
    assert answer.neg == [full(t, n["d_bad"]), full(t, n["c_bad"])]
    assert answer.meta["pos_ids"] == [n["a_f_ok"].id, n["c_ok"].id]
    assert answer.meta["neg_ids"] == [n["d_bad"].id, n["c_bad"].id]
    assert answer.meta["pos_q"] == pytest.approx([0.8, 0.6])
    assert answer.meta["neg_q"] == pytest.approx([-0.9, -0.4])
    assert answer.pos[0].endswith("<answer>7 \\boxed{7}<end_of_answer>")


def test_failed_step_never_positive_even_when_best(tree):
    t, n = tree
    for pair in extract_pairs(t, num_pos=10, num_neg=10, include_answer_steps=True):
        assert n["b"].text not in pair.pos
        assert all(n["b"].text not in p for p in pair.pos)  # not inside answer-level texts
        for text in pair.pos + pair.neg:
            assert n["inv"].text not in text and n["h"].text not in text


def test_counts(tree):
    t, n = tree
    root = extract_pairs(t, num_pos=1, num_neg=3, answer_pairs=False)[0]
    assert root.pos == [n["a"].text]
    assert root.neg == [n["g"].text, n["d"].text, n["e"].text]
    answer = extract_pairs(t, num_pos=3, num_neg=1, step_pairs=False)[0]
    assert answer.meta["pos_ids"] == [n["a_f_ok"].id, n["c_ok"].id]  # only two qualify
    assert answer.meta["neg_ids"] == [n["d_bad"].id]
    with pytest.raises(ValueError):
        extract_pairs(t, num_pos=0)


def test_min_margin(tree):
    t, n = tree
    # margin 1.0 at the root: positives need q > -0.9 + 1.0 -> a, c; negatives then need
    # q < 0.2 - 1.0 -> only g (-0.9); d (-0.8) is not below by more than the margin.
    pairs = {p.meta["node_id"]: p for p in extract_pairs(t, min_margin=1.0) if p.level == "step"}
    assert pairs[0].meta["pos_ids"] == [n["a"].id, n["c"].id]
    assert pairs[0].meta["neg_ids"] == [n["g"].id]
    # under a: 0.8 vs -0.5 is a gap of 1.3 > 1.0
    assert n["a"].id in pairs

    pairs = extract_pairs(t, min_margin=1.45)
    by = {(p.level, p.meta["node_id"]): p for p in pairs}
    assert by[("step", 0)].meta["pos_ids"] == [n["a"].id]  # 0.6 > -0.9 + 1.45; 0.2 is not
    assert by[("step", 0)].meta["neg_ids"] == [n["g"].id]  # -0.9 < 0.6 - 1.45
    assert ("step", n["a"].id) not in by  # gap 1.3 <= 1.45: no pair at all
    ans = by[("answer", 0)]
    assert ans.meta["pos_ids"] == [n["a_f_ok"].id, n["c_ok"].id]  # 0.8, 0.6 > -0.9 + 1.45
    assert ans.meta["neg_ids"] == [n["d_bad"].id]  # only -0.9 < 0.6 - 1.45

    for pair in extract_pairs(t, min_margin=0.5, include_answer_steps=True):
        for pq in pair.meta["pos_q"]:
            for nq in pair.meta["neg_q"]:
                assert pq > nq + 0.5


def test_answer_steps_on_request(tree):
    t, n = tree
    by = {p.meta["node_id"]: p for p in extract_pairs(t, include_answer_steps=True)[:-1]}
    at_c = by[n["c"].id]
    assert at_c.prefix_steps == [n["c"].text]
    assert at_c.pos == [n["c_ok"].text] and at_c.neg == [n["c_bad"].text]
    assert n["b"].id not in by  # b's only child is correct; nothing to contrast


def test_ungraded_answers_are_unknown():
    t = Tree("q")
    a = add(t, t.root, "a", 0.5)
    b = add(t, t.root, "b", -0.5)
    add(t, a, "1", 1.0, StepKind.ANSWER, grade=True)
    add(t, b, "2", 0.0, StepKind.ANSWER, grade=None)  # no reference: outcome unknown
    assert extract_pairs(t) == []
    assert [r.meta["node_id"] for r in select_sft(t)] == [3]


def test_no_pairs_without_both_outcomes():
    t = Tree("q")
    a = add(t, t.root, "a", 1.0)
    add(t, a, "1", 1.0, StepKind.ANSWER, grade=True)
    assert extract_pairs(t) == []
    assert extract_pairs(Tree("empty")) == []


def test_no_answer_terminal_is_a_wrong_trajectory():
    t = Tree("q")
    a = add(t, t.root, "a", 0.5)
    b = add(t, t.root, "b", -0.5)
    ok = add(t, a, "1", 1.0, StepKind.ANSWER, grade=True)
    no = add(t, b, "x", -1.0, StepKind.ANSWER, terminal=TerminalKind.NO_ANSWER)
    (step, answer) = extract_pairs(t)
    assert step.pos == [a.text] and step.neg == [b.text]
    assert answer.meta["pos_ids"] == [ok.id] and answer.meta["neg_ids"] == [no.id]


def test_ties_broken_by_node_id():
    t = Tree("q")
    kids = [add(t, t.root, f"p{i}", 0.5) for i in range(3)]
    negs = [add(t, t.root, f"n{i}", -0.5) for i in range(3)]
    for k in kids:
        add(t, k, "1", 1.0, StepKind.ANSWER, grade=True)
    for k in negs:
        add(t, k, "2", -1.0, StepKind.ANSWER, grade=False)
    root = extract_pairs(t, answer_pairs=False)[0]
    assert root.meta["pos_ids"] == [kids[0].id, kids[1].id]
    assert root.meta["neg_ids"] == [negs[0].id, negs[1].id]


def test_pairs_round_trip_through_json(tree):
    from rstar_math.training import PreferencePair

    t, _ = tree
    for pair in extract_pairs(Tree.from_json(t.to_json())):
        assert PreferencePair.from_dict(pair.to_dict()) == pair
    assert [p.to_dict() for p in extract_pairs(Tree.from_json(t.to_json()))] == [
        p.to_dict() for p in extract_pairs(t)
    ]


# --------------------------------------------------------------------------- SFT selection


def test_select_sft_top_k_by_mean_q(tree):
    t, n = tree
    recs = select_sft(t, k=2)
    # correct trajectories: a-a_f-ok mean 0.8, c-ok mean 0.6; b-ok (mean 0.95) has a failed step
    assert [r.meta["node_id"] for r in recs] == [n["a_f_ok"].id, n["c_ok"].id]
    assert recs[0].question == t.question
    assert recs[0].response == full(t, n["a_f_ok"])
    assert recs[0].response == (
        n["a"].text
        + n["a_f"].text
        + "\n<output>7<end_of_output>\n"
        + "<answer>7 \\boxed{7}<end_of_answer>"
    )
    assert recs[0].meta["mean_q"] == pytest.approx(0.8)
    assert recs[0].meta["min_q"] == pytest.approx(0.6)
    assert recs[0].meta["answer"] == "7" and recs[0].meta["reference"] == "7"
    assert [r.meta["node_id"] for r in select_sft(t, k=1)] == [n["a_f_ok"].id]
    assert len(select_sft(t, k=5)) == 2
    with_failed = select_sft(t, k=5, require_exec_ok=False)
    assert [r.meta["node_id"] for r in with_failed] == [n["b_ok"].id, n["a_f_ok"].id, n["c_ok"].id]


def test_select_sft_ties_by_min_q():
    t = Tree("q")
    # same mean Q (0.5) for all three; min Q 0.5 > 0.25 > 0.0
    x = add(t, t.root, "x", 0.0)
    x_ok = add(t, x, "1", 1.0, StepKind.ANSWER, grade=True)
    y = add(t, t.root, "y", 0.5)
    y_ok = add(t, y, "1", 0.5, StepKind.ANSWER, grade=True)
    z = add(t, t.root, "z", 0.25)
    z_ok = add(t, z, "1", 0.75, StepKind.ANSWER, grade=True)
    w = add(t, t.root, "w", 0.9)
    add(t, w, "2", 0.9, StepKind.ANSWER, grade=False)  # wrong: never selected
    assert [r.meta["node_id"] for r in select_sft(t, k=3)] == [y_ok.id, z_ok.id, x_ok.id]
    assert [r.meta["node_id"] for r in select_sft(t, k=2)] == [y_ok.id, z_ok.id]


def test_select_sft_nothing_correct():
    t = Tree("q")
    a = add(t, t.root, "a", 0.5)
    add(t, a, "2", -1.0, StepKind.ANSWER, grade=False)
    assert select_sft(t) == []
    with pytest.raises(ValueError):
        select_sft(t, k=0)
