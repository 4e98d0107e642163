"""Tree generation over real Ray actors on a local Ray instance."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from rstar_math.data import load_problems
from rstar_math.evolution import SolverSpec, generate_trees, read_problem_records
from rstar_math.search.config import SearchConfig
from tests.support.policies import problems_jsonl

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.sandbox]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO) + os.pathsep + str(REPO / "src")}},
    )
    yield ray
    ray.shutdown()


def _spec(latency_s: float = 0.0) -> SolverSpec:
    return SolverSpec(
        policy="tests.support.policies:noisy_arithmetic",
        backend="factory",
        generator_kwargs={"latency_s": latency_s},
        search=SearchConfig(num_rollouts=3, num_candidates=3, unvisited="inf"),
        executor_kwargs={"num_workers": 1},
    )


def _trees(path: Path) -> dict[str, list[dict[str, Any]]]:
    return {r.problem_id: [t.to_dict() for t in r.trees] for r in read_problem_records(path)}


def test_ray_actors_match_the_local_path(local_ray: Any, tmp_path: Path) -> None:
    from rstar_math.evolution.distributed import generate_trees_ray

    problems_jsonl(tmp_path / "p.jsonl", n=8)
    problems = load_problems(tmp_path / "p.jsonl")
    with _spec().build() as solver:
        generate_trees(
            solver, problems, tmp_path / "local.jsonl", chunk_size=4, show_progress=False
        )
    n = generate_trees_ray(_spec(), problems, tmp_path / "ray.jsonl", num_actors=2, chunk_size=2)
    assert n == 8
    ids = [r.problem_id for r in read_problem_records(tmp_path / "ray.jsonl")]
    assert sorted(ids) == sorted(p.id for p in problems) and len(ids) == len(set(ids))
    assert _trees(tmp_path / "ray.jsonl") == _trees(tmp_path / "local.jsonl")


def test_killing_an_actor_mid_run_loses_nothing(local_ray: Any, tmp_path: Path) -> None:
    from rstar_math.evolution.distributed import RayTreeGenerator
    from rstar_math.evolution.generate import RecordWriter

    problems_jsonl(tmp_path / "p.jsonl", n=8)
    problems = load_problems(tmp_path / "p.jsonl")
    gen = RayTreeGenerator(_spec(latency_s=0.05), num_actors=2, chunk_size=2, max_in_flight=2)
    seen: list[str] = []
    killed: list[Any] = []

    out = tmp_path / "ray.jsonl"
    with RecordWriter(out) as writer:

        def on_record(record: Any) -> None:
            writer.write(record)
            seen.append(record.problem_id)
            if not killed:  # first result in: kill the other actor while it works
                victim = gen.actors[1]
                ray.kill(victim, no_restart=True)
                killed.append(victim)

        gen.run(problems, on_record)
    assert killed and gen.replaced >= 1
    assert sorted(seen) == sorted(p.id for p in problems) and len(seen) == len(set(seen))
    records = list(read_problem_records(out))
    assert all(r.correct for r in records) and all(len(r.trees[0]) > 1 for r in records)
