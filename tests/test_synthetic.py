"""The synthetic word-problem domain and its teacher solutions (rstar_math.data.synthetic)."""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter

import pytest

from rstar_math.data.synthetic import (
    FAMILIES,
    LEVELS,
    NAMES,
    OBJECTS,
    TRAIN_LEVELS,
    LevelSpec,
    SyntheticProblem,
    corpus,
    generate_problems,
    make_splits,
    teacher_solution,
    to_sft_records,
)
from rstar_math.format import (
    ANSWER_END,
    CODE_START,
    STEP_END,
    PromptTemplate,
    extract_program,
    split_solution,
)
from rstar_math.tree import StepKind

ALL_LEVELS = [*TRAIN_LEVELS, "hard"]


@pytest.fixture(scope="module")
def problems() -> list[SyntheticProblem]:
    return generate_problems(500, ALL_LEVELS, seed=7)


@pytest.fixture(scope="module")
def splits() -> dict[str, list[SyntheticProblem]]:
    return make_splits(seed=3, n_train=600, n_val=150, n_hard=150)


def _run(program: str) -> tuple[str, dict]:
    """exec a trusted teacher program; its stdout and namespace."""
    ns: dict = {}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(program, ns)
    return buf.getvalue().strip(), ns


def test_deterministic_for_a_seed() -> None:
    a = generate_problems(40, ALL_LEVELS, seed=11)
    b = generate_problems(40, ALL_LEVELS, seed=11)
    c = generate_problems(40, ALL_LEVELS, seed=12)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    assert [p.question for p in a] != [p.question for p in c]
    s1 = make_splits(seed=1, n_train=30, n_val=10, n_hard=10)
    s2 = make_splits(seed=1, n_train=30, n_val=10, n_hard=10)
    assert {k: [p.question for p in v] for k, v in s1.items()} == {
        k: [p.question for p in v] for k, v in s2.items()
    }


def test_teacher_solutions_follow_the_format(problems: list[SyntheticProblem]) -> None:
    for p in problems:
        assert p.solution.startswith(CODE_START + "\n# Step 1: ")
        assert p.solution.endswith(ANSWER_END)
        steps = split_solution(p.solution)
        kinds = [s.kind for s in steps]
        assert kinds == [StepKind.CODE] * p.hops + [StepKind.FINAL_CODE, StepKind.ANSWER], (
            p.solution
        )
        assert steps[-1].answer == p.answer
        assert f"<output>{p.answer}<end_of_output>" in p.solution
        final = steps[-2].code.splitlines()
        assert final[0] == "# Now print the final answer" and final[1].startswith("print(")
        for i, step in enumerate(steps[: p.hops], 1):
            lines = step.code.splitlines()
            assert lines[0].startswith(f"# Step {i}: ")
            assert 1 <= len(lines) - 1 <= 3  # one comment line, 1-3 code lines
            assert all(not ln.startswith("#") for ln in lines[1:])


def test_programs_print_the_answer(problems: list[SyntheticProblem]) -> None:
    for p in problems:
        out, ns = _run(extract_program(p.solution))
        assert out == p.answer, p.solution
        assert p.answer.isdigit() and 0 < int(p.answer) < 1000
        # every intermediate quantity is a small positive integer
        values = [v for k, v in ns.items() if not k.startswith("__") and k != "x"]
        for v in values:
            if isinstance(v, int) or type(v).__name__ == "Integer":
                assert 0 < int(v) < 1000


def test_code_uses_entity_variable_names(problems: list[SyntheticProblem]) -> None:
    slugs = {name.lower() for name, _ in NAMES}
    for p in problems:
        for _, code in p.steps:
            var = code.splitlines()[-1].split(" = ")[0]
            assert re.fullmatch(r"[a-z_]+", var)
            head = var.split("_")[0]
            assert head in slugs or var in {"number", "each_share", "difference"} or head == "total"


def test_sympy_for_equations(problems: list[SyntheticProblem]) -> None:
    eq = [p for p in problems if p.family == "equation"]
    assert eq
    for p in eq:
        assert "from sympy import symbols, Eq, solve" in p.solution
        assert "solve(Eq(" in p.solution
        # imported once, before its first use
        assert p.solution.count("from sympy import") == 1
        assert p.solution.index("from sympy import") < p.solution.index("solve(Eq(")
    anon = [p for p in generate_problems(40, "level1", seed=2, families=["equation"])]
    assert any("number = solve(Eq(" in p.solution for p in anon)


def test_levels_hops_and_distractors(problems: list[SyntheticProblem]) -> None:
    for p in problems:
        lo, hi = LEVELS[p.level].hops
        assert max(lo, 1) <= p.hops <= hi
        dlo, dhi = LEVELS[p.level].distractors
        assert dlo <= p.meta["distractors"] <= dhi
    hard = [p for p in problems if p.level == "hard"]
    assert all(p.meta["distractors"] >= 1 for p in hard)
    assert Counter(p.meta["order"] for p in hard).keys() >= {"forward", "reversed", "shuffled"}


def test_hard_split_needs_more_hops_than_training(splits) -> None:
    max_train = max(p.hops for p in splits["train"] + splits["val"])
    assert min(p.hops for p in splits["hard"]) > max_train
    assert {p.level for p in splits["train"]} == set(TRAIN_LEVELS)
    assert {p.level for p in splits["hard"]} == {"hard"}
    with pytest.raises(ValueError):
        make_splits(n_train=5, n_val=5, n_hard=5, hard_level="level3")


def test_splits_are_disjoint(splits) -> None:
    seen: set[str] = set()
    for name in ("train", "val", "hard"):
        questions = [p.question for p in splits[name]]
        assert len(set(questions)) == len(questions), f"duplicates inside {name}"
        assert not seen & set(questions), f"{name} overlaps an earlier split"
        seen |= set(questions)
    assert [len(splits[k]) for k in ("train", "val", "hard")] == [600, 150, 150]


def test_families_all_present_with_their_relations(problems: list[SyntheticProblem]) -> None:
    assert {p.family for p in problems} == set(FAMILIES)
    assert {p.level for p in problems} == set(ALL_LEVELS)
    by_family: dict[str, Counter] = {f: Counter() for f in FAMILIES}
    for p in problems:
        by_family[p.family].update(p.meta["relations"])
    assert by_family["rate"].keys() & {"rate", "rate_const", "inv_rate"}
    assert by_family["ratio"]["ratio"] and by_family["ratio"]["share_root"]
    assert by_family["equation"]["equation"] and by_family["equation"]["inv_affine_plus"]
    kinds = set().union(*by_family.values())
    assert kinds >= {
        "given", "times", "frac", "plus", "minus", "affine_plus", "affine_minus", "sum",
        "total", "diff", "ratio", "share", "rate", "rate_const", "equation", "inv_times",
    }  # fmt: skip
    themes = {p.meta["theme"] for p in problems if p.family == "rate"}
    assert themes == {"work", "travel", "reading", "shopping", "packing"}


def test_phrasing_variety(problems: list[SyntheticProblem]) -> None:
    questions = {p.meta["question_template"] for p in problems}
    sentences = {t for p in problems for t in p.meta["templates"]}
    names = {n for p in problems for n in p.meta["names"]}
    nouns = {m for p in problems for m in p.meta["measures"]}
    assert len(questions) >= 20, sorted(questions)
    assert len(sentences) >= 100
    assert len(names) >= 45 and len(NAMES) >= 50
    assert len(nouns) >= 30 and len(OBJECTS) >= 40
    # a few hand-written phrasings a person might type are among the generated forms
    text = " ".join(p.question for p in problems)
    for phrase in ("twice as many", "fewer than", "half", "per hour", "ratio", "equally among"):
        assert phrase in text, phrase
    assert len({p.question.split(" ")[0] for p in problems}) >= 30  # openings vary


def test_distractors_are_not_used(problems: list[SyntheticProblem]) -> None:
    names = [n for n, _ in NAMES]
    with_distractors = [p for p in problems if p.meta["distractors"]]
    assert len(with_distractors) > len(problems) // 2
    for p in with_distractors:
        sentences = p.meta["distractor_sentences"]
        assert len(sentences) == p.meta["distractors"]
        rest = p.question
        for s in sentences:
            assert s in p.question
            rest = rest.replace(s, "")
        only_in_distractors = [
            n for n in names if re.search(rf"\b{n}\b", " ".join(sentences)) and n not in rest
        ]
        for n in only_in_distractors:
            # word boundaries: "Ugo" is in "Hugo", "ugo_" in "hugo_feathers"
            assert not re.search(rf"\b{n.lower()}_|\b{n}\b", p.solution), n


def test_teacher_solution_and_records(problems: list[SyntheticProblem]) -> None:
    p = problems[-1]
    assert teacher_solution(p) == p.solution
    plain = teacher_solution(p, numbered=False)
    assert "Step" not in plain
    assert [s.kind for s in split_solution(plain)] == [s.kind for s in split_solution(p.solution)]
    assert SyntheticProblem.from_dict(p.to_dict()) == p
    records = to_sft_records(problems[:5])
    assert [r.question for r in records] == [q.question for q in problems[:5]]
    assert [r.response for r in records] == [q.solution for q in problems[:5]]
    assert records[0].meta["answer"] == problems[0].answer


_PLAN_LINE = re.compile(r"^# (\w+) (?:needs (\w+(?: and \w+)*)|is given)$")


def _step_lines(text: str) -> list[str]:
    text = text.removeprefix(CODE_START).replace(STEP_END, "")
    return [line for line in text.strip().split("\n") if line]


def _plan_and_steps(solution: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The plan lines (quantity, what it needs) and the quantities the later steps define."""
    steps = [s for s in split_solution(solution) if s.kind == StepKind.CODE]
    head, *plan_lines = _step_lines(steps[0].text)
    assert head == "# Step 1: Plan backwards from what is asked"
    plan = []
    for line in plan_lines:
        m = _PLAN_LINE.match(line)
        assert m, line
        plan.append((m.group(1), m.group(2).split(" and ") if m.group(2) else []))
    defined = []
    for step in steps[1:]:
        code = [ln for ln in _step_lines(step.text) if not ln.startswith(("#", "from"))]
        defined.append(code[-1].split(" = ")[0])
    return plan, defined


def test_a_planned_solution_works_backwards_then_computes_forwards(
    problems: list[SyntheticProblem],
) -> None:
    """One hop per line: the plan starts at what is asked and each line names what a quantity
    needs; the steps then compute the plan's quantities in reverse, each after what it needs."""
    for p in problems:
        planned = teacher_solution(p, plan=True)
        out, _ = _run(extract_program(planned))
        assert out == p.answer, planned
        plan, defined = _plan_and_steps(planned)
        assert plan[0][0] == p.target
        assert defined == [var for var, _ in reversed(plan)]
        assert sorted(defined) == sorted(var for var, _ in p.meta["step_deps"])
        needs = dict(plan)
        for i, var in enumerate(defined):
            assert set(needs[var]) <= set(defined[:i])
        for var, need in plan:  # everything a line needs is planned on a later line
            assert all(plan.index((n, needs[n])) > plan.index((var, need)) for n in need)
        # the same steps as the unplanned solution, reordered (sympy set up once, when first used)
        assert len(defined) == p.hops
        assert planned.count("from sympy import") == p.solution.count("from sympy import")
        if "solve(" in planned:
            assert planned.index("from sympy import") < planned.index("solve(")


def test_a_branching_problem_is_planned_depth_first() -> None:
    p = next(
        q
        for q in generate_problems(200, "hard", seed=2)
        if sum(len(d) > 1 for _, d in q.meta["step_deps"]) >= 2
    )
    plan, defined = _plan_and_steps(teacher_solution(p, plan=True))
    position = {var: i for i, var in enumerate(defined)}
    for var, need in plan:
        for n in need:  # a quantity is computed right after the last of its needs' subtrees
            assert position[n] < position[var]
        if need:
            assert position[need[-1]] == position[var] - 1


def test_planning_needs_the_dependency_graph(problems: list[SyntheticProblem]) -> None:
    data = problems[0].to_dict()
    del data["meta"]["step_deps"]
    old = SyntheticProblem.from_dict(data)
    assert teacher_solution(old) == old.solution  # the unplanned solution needs no graph
    with pytest.raises(ValueError, match="step_deps"):
        teacher_solution(old, plan=True)


def test_a_planned_corpus_holds_the_plan_lines() -> None:
    plain, planned = corpus(10, seed=4), corpus(10, seed=4, plan=True)
    assert not any(" needs " in t for t in plain[:10])
    assert all("# Step 1: Plan backwards" in t for t in planned[:10])
    assert plain[-1] == planned[-1]


def test_corpus_uses_the_sft_prompt() -> None:
    texts = corpus(20, seed=4)
    prompt = PromptTemplate.sft()
    qs = generate_problems(20, TRAIN_LEVELS, seed=4)
    assert texts[:20] == [prompt.render(q.question) + q.solution for q in qs]
    assert "Zoe" in texts[-1] and "bottle caps" in texts[-1]


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        generate_problems(3, "level9")
    with pytest.raises(ValueError):
        generate_problems(3, "level1", families=["geometry"])
    spec = LevelSpec("custom", (8, 9), (0, 0), (1.0, 0.0, 0.0))
    ps = generate_problems(8, spec, seed=0)
    assert all(p.level == "custom" and 8 <= p.hops <= 9 for p in ps)
    assert all(p.meta["order"] == "forward" and p.meta["distractors"] == 0 for p in ps)
    assert {p.level for p in generate_problems(8, [1, "2"], seed=0)} == {"level1", "level2"}


def test_a_quoting_teacher_writes_each_steps_sentence_word_for_word(
    problems: list[SyntheticProblem],
) -> None:
    """Each comment is a sentence of the question (the question itself for a root step such as
    a total); the code and the answer are the unquoted teacher's."""
    for p in problems:
        quoted = teacher_solution(p, quote=True)
        out, _ = _run(extract_program(quoted))
        assert out == p.answer, quoted
        heads = [ln for ln in quoted.splitlines() if ln.startswith("# Step ")]
        assert len(heads) == p.hops
        sentences = [head.split(": ", 1)[1] for head in heads]
        assert sentences == p.meta["step_sentences"]
        for sentence in sentences:
            assert sentence in p.question
        # every sentence read is a different one, and distractors are never quoted
        assert len(set(sentences)) == len(sentences)
        assert not set(sentences) & set(p.meta["distractor_sentences"])
        assert _strip_comments(quoted) == _strip_comments(p.solution)


def _strip_comments(solution: str) -> str:
    return "\n".join(ln for ln in solution.splitlines() if not ln.startswith("#"))


def test_quoting_combines_with_planning_and_needs_the_sentences(
    problems: list[SyntheticProblem],
) -> None:
    p = next(q for q in problems if q.hops >= 3)
    both = teacher_solution(p, plan=True, quote=True)
    assert _strip_comments(both) == _strip_comments(teacher_solution(p, plan=True))
    assert "# Step 1: Plan backwards" in both
    for sentence in p.meta["step_sentences"]:
        assert f": {sentence}\n" in both
    data = p.to_dict()
    del data["meta"]["step_sentences"]
    old = SyntheticProblem.from_dict(data)
    assert teacher_solution(old) == p.solution
    with pytest.raises(ValueError, match="step_sentences"):
        teacher_solution(old, quote=True)


def test_a_quoting_corpus_holds_the_quoted_sentences() -> None:
    quoted = corpus(10, seed=4, quote=True)
    problems = generate_problems(10, seed=4)
    for text, p in zip(quoted, problems, strict=False):
        assert f"# Step 1: {p.meta['step_sentences'][0]}\n" in text


def _equation_lines(step_code: str) -> list[str]:
    return [ln for ln in step_code.splitlines()[1:] if ln.startswith("eqs.append(")]


def test_an_equation_teacher_writes_each_needed_sentence_as_it_reads(
    problems: list[SyntheticProblem],
) -> None:
    """One step per needed sentence, in the question's order; each step declares the symbols
    it names and appends one equation that the reference values satisfy; the final step
    solves the system for the asked quantity."""
    from sympy import Eq

    for p in problems:
        solution = teacher_solution(p, quote=True, equations=True)
        out, _ = _run(extract_program(solution))
        assert out == p.answer, solution
        steps = split_solution(solution)
        assert [s.kind for s in steps] == [StepKind.CODE] * p.hops + [
            StepKind.FINAL_CODE,
            StepKind.ANSWER,
        ]
        sentences = [s.code.splitlines()[0].split(": ", 1)[1] for s in steps[: p.hops]]
        assert sorted(sentences) == sorted(p.meta["step_sentences"])
        where = [p.question.rfind(s) for s in sentences]
        assert where == sorted(where) and min(where) >= 0  # the question's order
        _, values = _run(extract_program(p.solution))  # the reference values of every quantity
        for i, step in enumerate(steps[: p.hops]):
            (append,) = _equation_lines(step.code)
            # a step needs nothing from the steps before it but the setup
            setup = "" if i == 0 else "from sympy import symbols, Eq, solve\neqs = []\n"
            _, local = _run(setup + "\n".join(step.code.splitlines()[1:]))
            (equation,) = local["eqs"]
            assert isinstance(equation, Eq), append
            reference = {s: values[str(s)] for s in equation.free_symbols}
            assert bool(equation.subs(reference)), (append, reference)
        assert steps[-2].code.splitlines()[1] == f"print(solve(eqs, dict=True)[0][{p.target}])"


def test_an_equation_says_what_its_sentence_says() -> None:
    """ "Sam has 11 fewer than Omar" is written Eq(sam, omar - 11) even where Sam is the known
    one (the old teacher computed omar = sam + 11), and a sentence the old teacher solved for
    its unknown is the equation it states."""
    problems = generate_problems(400, [*TRAIN_LEVELS, "hard"], seed=2)
    additive = solved = 0
    for p in problems:
        solution = teacher_solution(p, equations=True)
        steps = zip(p.steps, p.meta["step_equations"], p.meta["step_sentences"], strict=True)
        for (_, code), equation, sentence in steps:
            assert f"eqs.append({equation})" in solution
            target, rhs = code.splitlines()[-1].split(" = ", 1)
            if "solve(" in rhs:
                solved += 1
                assert "solve" not in equation and target in equation
            sign = re.fullmatch(r"Eq\(\w+, \w+ ([+-]) \d+\)", equation)
            if sign:
                additive += 1
                more = re.search(r"\b(more|greater|Adding)\b", sentence) is not None
                fewer = re.search(r"\b(fewer|less|smaller|Subtracting)\b", sentence) is not None
                assert more != fewer and (sign.group(1) == "+") == more, (sentence, equation)
    assert additive > 100 and solved > 20


def test_equations_exclude_a_plan_and_work_without_stated_equations(
    problems: list[SyntheticProblem],
) -> None:
    p = next(q for q in problems if q.hops >= 3)
    with pytest.raises(ValueError, match="exclude"):
        teacher_solution(p, plan=True, equations=True)
    data = p.to_dict()
    del data["meta"]["step_equations"]  # a problem generated before they were recorded
    older = SyntheticProblem.from_dict(data)
    out, _ = _run(extract_program(teacher_solution(older, equations=True)))
    assert out == p.answer
    del data["meta"]["step_sentences"]
    with pytest.raises(ValueError, match="step_sentences"):
        teacher_solution(SyntheticProblem.from_dict(data), equations=True)
    texts = corpus(5, seed=4, equations=True)
    assert all("eqs.append(Eq(" in t for t in texts[:5])


def test_equation_solutions_run_step_by_step_in_the_sandbox() -> None:
    """The sandbox (its import policy and sympy patches) runs every step and prints the answer."""
    from rstar_math.executors import SandboxExecutor
    from rstar_math.interfaces import ExecRequest

    chosen = generate_problems(6, ["level3", "hard"], seed=9)
    with SandboxExecutor() as executor:
        for p in chosen:
            steps = split_solution(teacher_solution(p, quote=True, equations=True))
            context: tuple[str, ...] = ()
            for step in steps[:-1]:
                code = step.code
                (result,) = executor.execute_batch([ExecRequest(code, context)])
                assert result.ok, (result.error_type, result.error_message, code)
                context = (*context, code)
            assert result.stdout.strip() == p.answer


def _sentences(question: str) -> list[str]:
    """The question's sentences ("Ann has 5 apples. How many ...?" -> two)."""
    return re.findall(r"[^.?!]+[.?!]", question)


def test_an_every_sentence_teacher_writes_each_sentence_in_order(
    problems: list[SyntheticProblem],
) -> None:
    """One step per sentence of the question, distractors included, in the question's order,
    each quoting its sentence and appending the equation it states; the final step solves them
    and prints the answer. Only the question itself may go unquoted (when it just asks)."""
    for p in problems:
        solution = teacher_solution(p, every_sentence=True, numbered=False)
        out, ns = _run(extract_program(solution))
        assert out == p.answer, solution
        steps = split_solution(solution)
        n = len(p.meta["sentence_equations"])
        assert [s.kind for s in steps] == [StepKind.CODE] * n + [
            StepKind.FINAL_CODE,
            StepKind.ANSWER,
        ]
        quoted = " ".join(s.code.splitlines()[0].removeprefix("# ") for s in steps[:n])
        assert p.question.startswith(quoted)
        rest = p.question[len(quoted) :].strip()
        assert rest == "" or (len(_sentences(rest)) <= 2 and rest.endswith(("?", ".")))
        for distractor in p.meta["distractor_sentences"]:
            assert distractor in quoted
        assert len(ns["eqs"]) == n and all(isinstance(e, str) for e in ns["eqs"])
        for i, step in enumerate(steps[:n]):
            assert step.code.splitlines()[-1] == f"eqs.append('{ns['eqs'][i]}')"
        assert steps[n].code.splitlines()[-1] == f"print(sol[sympify('{p.target}')])"


def test_distractor_equations_leave_the_answer_alone(problems: list[SyntheticProblem]) -> None:
    """What a distractor states is a quantity nothing needs: the needed sentences alone give the
    same answer, every quantity of the whole system is determined, and no two sentences state
    the same quantity from scratch (no "Ann is 9 years old. ... Ann is 12 years old.")."""
    from sympy import solve, sympify

    def system(equations: list[str]) -> dict:
        eqs = [sympify(f"Eq({e.replace('=', ',')})") for e in equations]
        (solution,) = solve(eqs, dict=True)
        return {str(k): v for k, v in solution.items()}

    checked = 0
    for p in problems:
        stated = dict(p.meta["sentence_equations"])
        distractors = p.meta["distractor_sentences"]
        if not distractors:
            continue
        checked += 1
        full = system(list(stated.values()))
        needed = system([e for s, e in stated.items() if s not in distractors])
        assert str(full[p.target]) == str(needed[p.target]) == p.answer
        names = {str(s) for e in stated.values() for s in sympify(e.split("=")[0]).free_symbols}
        names |= {str(s) for e in stated.values() for s in sympify(e.split("=")[1]).free_symbols}
        assert names == set(full), (p.question, stated)  # nothing left free
        assert all(full[n].is_integer for n in full)
        givens = [
            stated[d].split(" = ")[0] for d in distractors if stated[d].split(" = ")[1].isdigit()
        ]
        assert len(givens) == len(set(givens))
    assert checked > 200


def test_every_sentence_needs_the_sentence_equations(problems: list[SyntheticProblem]) -> None:
    p = next(q for q in problems if q.hops >= 3)
    with pytest.raises(ValueError, match="excludes"):
        teacher_solution(p, every_sentence=True, equations=True)
    with pytest.raises(ValueError, match="excludes"):
        teacher_solution(p, every_sentence=True, plan=True)
    data = p.to_dict()
    del data["meta"]["sentence_equations"]  # a problem generated before they were recorded
    with pytest.raises(ValueError, match="sentence_equations"):
        teacher_solution(SyntheticProblem.from_dict(data), every_sentence=True)
    texts = corpus(5, seed=4, every_sentence=True)
    assert all("eqs.append('" in t and "sol = solve(" in t for t in texts[:5])


def test_every_sentence_solutions_run_step_by_step_in_the_sandbox() -> None:
    from rstar_math.executors import SandboxExecutor
    from rstar_math.interfaces import ExecRequest

    chosen = generate_problems(6, ["level3", "hard"], seed=9)
    with SandboxExecutor() as executor:
        for p in chosen:
            steps = split_solution(teacher_solution(p, every_sentence=True, numbered=False))
            context: tuple[str, ...] = ()
            for step in steps[:-1]:
                (result,) = executor.execute_batch([ExecRequest(step.code, context)])
                assert result.ok, (result.error_type, result.error_message, step.code)
                context = (*context, step.code)
            assert result.stdout.strip() == p.answer
