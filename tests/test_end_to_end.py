"""End to end with a real tiny HF policy, a PPMScorer and the sandbox (issue 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rstar_math import MCTSSolver, SearchConfig, StepKind, TerminalKind, Tree

pytestmark = [pytest.mark.hf, pytest.mark.sandbox]


@pytest.fixture(scope="module")
def ppm_dir(tiny_trained_policy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    from rstar_math.scorers import PPMModel

    path = tmp_path_factory.mktemp("ppm") / "ppm"
    PPMModel.from_policy(str(tiny_trained_policy_dir)).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("algorithm", ["mcts", "beam", "best_of_n", "greedy"])
def test_every_algorithm_with_hf_generator_and_ppm(
    algorithm: str, tiny_trained_policy_dir: Path, ppm_dir: str
) -> None:
    from rstar_math.executors import SandboxExecutor
    from rstar_math.generators import HFGenerator
    from rstar_math.scorers import PPMScorer
    from tests.conftest import TINY_PROBLEMS

    config = SearchConfig(
        algorithm=algorithm,  # type: ignore[arg-type]
        num_rollouts=3,
        num_candidates=3,
        num_samples=3,
        beam_width=2,
        beam_expand=2,
        max_step_tokens=96,
        max_depth=8,
    )
    questions = [q for q, _, _ in TINY_PROBLEMS]
    answers = [a for _, _, a in TINY_PROBLEMS]
    with SandboxExecutor(num_workers=2) as executor:
        solver = MCTSSolver(
            HFGenerator(str(tiny_trained_policy_dir), device="cpu"),
            scorer=PPMScorer.from_pretrained(ppm_dir),
            executor=executor,
            config=config,
        )
        results = solver.solve_batch(questions, answers)
    for result, answer in zip(results, answers):
        tree = result.tree
        assert Tree.from_json(tree.to_json()).to_dict() == tree.to_dict()
        assert all(
            n.kind in (StepKind.CODE, StepKind.FINAL_CODE, StepKind.ANSWER) for n in tree.nodes[1:]
        )
        assert all(n.ppm_value is not None for n in tree.nodes[1:])
        # the overfit policy writes its training solution: executed, printed, boxed, graded
        finals = [n for n in tree.nodes if n.kind is StepKind.FINAL_CODE]
        assert finals and all(n.exec_ok for n in finals)
        assert any(n.terminal is TerminalKind.ANSWER and n.grade for n in tree.nodes)
        assert result.answer == answer and result.correct is True
