"""Engine overhead: expanded nodes per second with instant backends, microseconds per node.

Generator, executor and scorer answer instantly, so what is measured is the search itself: UCT
selection, node bookkeeping, prompt assembly, back-up. Engine time = wall time minus the time spent
inside the three backends. Target (issue 8): at most 50 microseconds of engine time per expanded
node.

Run: python benchmarks/engine.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import append_section

from rstar_math import MCTSSolver, SearchConfig
from rstar_math.generators.scripted import ScriptedGenerator
from rstar_math.interfaces import ExecRequest, ExecResult, GenerationRequest, ScoreRequest


class InstantExecutor:
    def execute_batch(self, requests: Sequence[ExecRequest]) -> list[ExecResult]:
        return [ExecResult(stdout="1\n") for _ in requests]

    def close(self) -> None:
        pass


class InstantScorer:
    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        return [((len(r.steps) * 7919 + len(r.steps[-1])) % 200) / 100.0 - 1.0 for r in requests]


def policy(request: GenerationRequest) -> list[str]:
    depth = request.prompt.count("<end_of_step>")
    if request.prompt.endswith("<end_of_output>\n"):
        return [f"<answer>\\boxed{{{i % 3}}}<end_of_answer>" for i in range(4)]
    if depth >= 6:
        return [f"\nprint(v{i})\n<end_of_code>" for i in range(4)]
    return [f"\n# step {depth}\nv{i} = {depth} + {i}\n<end_of_step>" for i in range(8)]


def run(problems: int, rollouts: int, candidates: int, scorer: bool) -> dict[str, float]:
    gen = ScriptedGenerator(policy)
    config = SearchConfig(num_rollouts=rollouts, num_candidates=candidates, unvisited="inf")
    solver = MCTSSolver(
        gen, scorer=InstantScorer() if scorer else None, executor=InstantExecutor(), config=config
    )
    questions = [f"Problem {i}: compute the thing." for i in range(problems)]
    t0 = time.perf_counter()
    results = solver.solve_batch(questions)
    wall = time.perf_counter() - t0
    batch = results[0].stats["batch"]
    backend = batch["time_generate_s"] + batch["time_execute_s"] + batch["time_score_s"]
    nodes = sum(len(r.tree) - 1 for r in results)
    expansions = batch["generation_requests"]
    return {
        "nodes": nodes,
        "expansions": expansions,
        "wall_s": wall,
        "engine_s": wall - backend,
        "nodes_per_s": nodes / wall,
        "us_per_node": 1e6 * (wall - backend) / nodes,
        "us_per_expansion": 1e6 * (wall - backend) / expansions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--rollouts", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    for scorer in (False, True):
        r = run(args.problems, args.rollouts, args.candidates, scorer)
        rows.append((("PPM-guided" if scorer else "terminal-only"), r))
    lines = [
        f"{args.problems} problems x {args.rollouts} rollouts, {args.candidates} candidates per "
        "expansion, instant scripted generator/executor/scorer.",
        "",
        "| mode | nodes | expansions | wall s | nodes/s | engine us/node | engine us/expansion |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['nodes']} | {r['expansions']} | {r['wall_s']:.2f} | "
            f"{r['nodes_per_s']:.0f} | {r['us_per_node']:.1f} | {r['us_per_expansion']:.1f} |"
        )
    worst = max(r["us_per_node"] for _, r in rows)
    lines += [
        "",
        f"Target: <= 50 us of engine time per expanded node; worst measured {worst:.1f} us.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        append_section("Engine overhead (benchmarks/engine.py)", text)


if __name__ == "__main__":
    main()
