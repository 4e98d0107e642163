"""The built-in model hook: ``MCTSSolver.default()`` / ``default_solver()`` / ``rstar-math solve``.

The shipped miniature weights are built by a separate pipeline; these tests check the loading path
with a model directory laid out the same way (``RSTAR_MINIATURE_DIR``), and the message when no
built-in model is installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rstar_math import MCTSSolver
from rstar_math.models import builtin


def test_missing_builtin_model_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(builtin.ENV_DIR, str(tmp_path / "nothing"))
    assert builtin.builtin_paths() is None
    with pytest.raises(FileNotFoundError, match=r"build_miniature\.py.*MCTSSolver\(HFGenerator"):
        MCTSSolver.default()


@pytest.mark.hf
@pytest.mark.sandbox
def test_default_solver_loads_a_miniature_layout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_trained_policy_dir: Path
) -> None:
    from rstar_math.scorers import PPMModel
    from tests.conftest import TINY_PROBLEMS

    root = tmp_path / "miniature"
    shutil.copytree(tiny_trained_policy_dir, root / "policy")
    PPMModel.from_policy(str(tiny_trained_policy_dir)).save_pretrained(root / "ppm")
    monkeypatch.setenv(builtin.ENV_DIR, str(root))
    assert builtin.builtin_paths() == (str(root / "policy"), str(root / "ppm"))
    question, _, answer = TINY_PROBLEMS[0]
    with MCTSSolver.default(num_rollouts=2, num_candidates=2) as solver:
        assert solver.scorer is not None and solver.config.num_rollouts == 2
        result = solver.solve(question, reference=answer)
    assert result.correct is True
    assert all(n.ppm_value is not None for n in result.tree.nodes[1:])


@pytest.mark.hf
@pytest.mark.sandbox
def test_cli_solve_without_policy_uses_the_builtin_model(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_trained_policy_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    import torch

    from rstar_math.cli import _solver_spec, build_parser, main
    from rstar_math.scorers import PPMModel
    from tests.conftest import TINY_PROBLEMS

    root = tmp_path / "miniature"
    shutil.copytree(tiny_trained_policy_dir, root / "policy")
    PPMModel.from_policy(str(tiny_trained_policy_dir)).save_pretrained(root / "ppm")
    monkeypatch.setenv(builtin.ENV_DIR, str(root))
    question, _, answer = TINY_PROBLEMS[0]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        code = main(["solve", question, "--json", "--num-rollouts", "2", "--reference", answer])
        # a model this small runs on one intra-op thread unless --threads says otherwise
        assert torch.get_num_threads() == 1
        # the search the built-in model was tuned for, with the flag's field overridden
        args = build_parser().parse_args(["solve", question, "--num-rollouts", "2"])
        spec = _solver_spec(args, {})
        assert spec.search == builtin.default_search_config(num_rollouts=2)
        assert (spec.policy, spec.ppm) == (str(root / "policy"), str(root / "ppm"))
        # with the PPM turned off in a config file, answers are chosen by vote
        spec = _solver_spec(args, {"ppm": None})
        assert spec.ppm is None and spec.search.answer_selection == "majority"
    finally:
        torch.set_num_threads(threads)
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["correct"] is True


def test_cli_solve_without_policy_or_builtin_model_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rstar_math.cli import main

    monkeypatch.setenv(builtin.ENV_DIR, str(tmp_path / "nothing"))
    assert main(["solve", "Ann has 5 apples. How many apples does Ann have?"]) == 2
    err = capsys.readouterr().err
    assert "--policy" in err and "build_miniature.py" in err


# --------------------------------------------------------------------------- the shipped model

_EASY_QUESTIONS = (
    # (question, answer): level-1 shaped problems of the synthetic domain that the shipped model
    # solves (a check that its files and default search still work together, not an accuracy
    # measure: benchmarks/miniature.py measures that; README's main job uses the first one)
    (
        "Sam has 7 pencils. Tara has twice as many pencils as Sam. How many pencils does Tara "
        "have?",
        "14",
    ),
    (
        "Gus has exactly 4 magnets. Compared with Gus, Pedro has four times as many magnets. "
        "Work out how many magnets Pedro has.",
        "16",
    ),
)


def _shipped() -> tuple[str, str]:
    """The package's own miniature model (the environment override is ignored here)."""
    policy, ppm = builtin.MINIATURE_DIR / "policy", builtin.MINIATURE_DIR / "ppm"
    # the package ships it: a checkout without it is broken, not a reason to skip
    assert (policy / "model.safetensors").is_file(), f"{policy} is missing its weights"
    return str(policy), str(ppm)


def test_shipped_model_is_complete_and_small(monkeypatch: pytest.MonkeyPatch) -> None:
    policy, ppm = _shipped()
    monkeypatch.delenv(builtin.ENV_DIR, raising=False)
    assert builtin.builtin_paths() == (policy, ppm)
    total = sum(f.stat().st_size for d in (policy, ppm) for f in Path(d).iterdir())
    assert total < 20 * 1024**2
    for d in (policy, ppm):
        assert not list(Path(d).glob("*.bin")), "weights must be safetensors"


@pytest.mark.hf
def test_shipped_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from rstar_math.format import SPECIAL_MARKERS, PromptTemplate
    from rstar_math.generators import HFGenerator
    from rstar_math.scorers import PPMScorer
    from rstar_math.scorers.ppm import ppm_input

    policy, ppm = _shipped()
    generator = HFGenerator(policy, device="cpu")
    for marker in SPECIAL_MARKERS:  # step markers are single tokens
        assert len(generator.tokenizer.encode(marker, add_special_tokens=False)) == 1
    scorer = PPMScorer.from_pretrained(ppm, device="cpu")
    # the policy's own first step for the README's question, and the same step miscopied
    question = _EASY_QUESTIONS[0][0]
    step = "<code>\n# Sam has 7 pencils.\neqs = []\neqs.append('sam_pencils = {}')\n<end_of_step>"
    inputs = [ppm_input(PromptTemplate.sft(), question, [step.format(n)]) for n in (7, 9)]
    right, wrong = scorer.score_inputs(inputs)
    assert -1.0 < wrong < right < 1.0  # not saturated, and it prefers the faithful copy
    assert scorer.tokenizer.get_vocab() == generator.tokenizer.get_vocab()  # one tokenizer


@pytest.mark.hf
@pytest.mark.sandbox
@pytest.mark.slow
def test_default_solver_solves_easy_synthetic_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    from rstar_math import SearchConfig, Tree
    from rstar_math.tree import StepKind, TerminalKind

    _shipped()
    monkeypatch.delenv(builtin.ENV_DIR, raising=False)
    questions = [q for q, _ in _EASY_QUESTIONS]
    answers = [a for _, a in _EASY_QUESTIONS]
    with builtin.default_solver() as solver:
        assert solver.scorer is not None
        assert solver.config == builtin.default_search_config(seed=0)
        assert isinstance(solver.config, SearchConfig)
        results = solver.solve_batch(questions)
    assert [r.answer for r in results] == answers
    for result in results:
        tree = result.tree
        # a valid tree: parent/child links agree, depths grow by one, values are in range
        for node in tree.nodes[1:]:
            parent = tree.nodes[node.parent]
            assert node.id in parent.children and node.depth == parent.depth + 1
            assert node.ppm_value is not None and -1.0 <= node.ppm_value <= 1.0
        best = result.trajectory
        assert best is not None and best.terminal is TerminalKind.ANSWER
        kinds = [n.kind for n in best.nodes]  # root excluded
        assert kinds[-1] is StepKind.ANSWER and StepKind.FINAL_CODE in kinds
        # the tree survives a JSON round trip
        again = Tree.from_json(tree.to_json())
        assert again.to_dict() == tree.to_dict()
