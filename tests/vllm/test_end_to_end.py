"""End to end: MCTSSolver with the vLLM and the server generators and a PPMScorer (issue 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rstar_math import MCTSSolver, SearchConfig, StepKind, TerminalKind, Tree
from tests.vllm.conftest import load_sft_records

pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.sandbox]


@pytest.fixture(scope="module")
def ppm_scorer(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from rstar_math.scorers import PPMModel, PPMScorer

    path = tmp_path_factory.mktemp("ppm") / "ppm"
    PPMModel.from_policy(str(tiny_model_dir)).save_pretrained(path)
    return PPMScorer.from_pretrained(str(path))


@pytest.fixture(scope="module")
def executor() -> Any:
    from rstar_math.executors import SandboxExecutor

    with SandboxExecutor(num_workers=2) as ex:
        yield ex


def _check_valid_trees(results: list[Any]) -> None:
    for result in results:
        tree = result.tree
        assert result.stats["candidates"] > 0, "the generator produced nothing"
        again = Tree.from_json(tree.to_json())
        assert again.to_dict() == tree.to_dict()
        for node in tree.nodes[1:]:
            assert node.kind in (StepKind.CODE, StepKind.FINAL_CODE, StepKind.ANSWER)
            if node.terminal is None or node.terminal is TerminalKind.ANSWER:
                assert node.ppm_value is not None and -1.0 <= node.ppm_value <= 1.0
            assert node.parent is not None and node.id in tree.nodes[node.parent].children
    # at least one search ran whole rollouts (a tiny model may find no valid first step for one
    # question; that tree stays a bare root, which is valid too)
    assert any(r.tree.root.visits > 0 for r in results)
    assert any(n.terminal is not None for r in results for n in r.tree.nodes)


def _questions() -> list[str]:
    """Training questions whose solutions are short enough for the tiny model to have learnt whole
    (it saw the first 256 tokens of each) and that run as written."""
    records = load_sft_records()
    short = sorted(range(len(records)), key=lambda i: len(records[i]["response"]))
    return (
        [records[i]["query"] for i in short if i != 0][:3]
        if len(records) > 3
        else [r["query"] for r in records]
    )


def test_mcts_with_vllm_generator_and_ppm(
    vllm_generator: Any, ppm_scorer: Any, executor: Any
) -> None:
    config = SearchConfig(
        num_rollouts=3,
        num_candidates=3,
        max_step_tokens=384,
        max_depth=8,
        keep_failed_steps=True,  # the real solutions include steps that do not run
    )
    solver = MCTSSolver(vllm_generator, scorer=ppm_scorer, executor=executor, config=config)
    results = solver.solve_batch(_questions())
    _check_valid_trees(results)
    assert sum(r.stats["generated_tokens"] for r in results) > 0
    # the trained policy reproduces at least one of its training solutions to a boxed answer
    assert any(n.terminal is TerminalKind.ANSWER for r in results for n in r.tree.nodes), [
        r.tree.to_dict() for r in results
    ]


def test_mcts_with_server_generator_and_ppm(
    vllm_server: Any, ppm_scorer: Any, executor: Any
) -> None:
    from rstar_math.generators import OpenAIGenerator

    config = SearchConfig(
        num_rollouts=2,
        num_candidates=2,
        max_step_tokens=384,
        max_depth=8,
        keep_failed_steps=True,
        temperature=0.0,  # greedy: the tiny model replays its training solutions
    )
    with OpenAIGenerator(vllm_server.base_url, max_concurrency=4, timeout_s=120) as gen:
        solver = MCTSSolver(gen, scorer=ppm_scorer, executor=executor, config=config)
        results = solver.solve_batch(_questions())
    _check_valid_trees(results)
