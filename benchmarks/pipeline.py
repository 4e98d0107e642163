"""Pipelining: overlapping generation and code execution of different trees.

A generator whose latency grows with the batch (``per_request_s`` per request, like a model
decoding a batch) and the real sandbox executor, calibrated so the two spend comparable time.
The same batch of problems runs with sequential phases (``pipeline_groups=1``) and pipelined
(``pipeline_groups=2, 3``); trees must be identical, wall time should drop. Target (issue 8): at
most 0.7x the sequential wall time when the two latencies are equal.

Run: python benchmarks/pipeline.py
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
from rstar_math.executors import SandboxExecutor
from rstar_math.generators.scripted import ScriptedGenerator
from rstar_math.interfaces import GenerationRequest, GenerationResult


def policy(request: GenerationRequest) -> list[str]:
    """Three-step solutions with sympy/arithmetic work in each step."""
    p = request.prompt
    depth = p.count("<end_of_step>")
    if p.endswith("<end_of_output>\n"):
        value = p.rsplit("<output>", 1)[1].split("<end_of_output>")[0].strip()
        return [f"<answer>\\boxed{{{value}}}<end_of_answer>"]
    if depth >= 3:
        return ["\nprint(total)\n<end_of_code>"]
    if depth == 0:
        return [
            "<code>\nfrom sympy import Rational, factorint\n"
            f"total = Rational({k}, 3)\n<end_of_step>"
            for k in range(1, 5)
        ]
    return [
        f"\ntotal = total * {k} + sum(factorint({97 * k + depth}).values())\n<end_of_step>"
        for k in range(2, 6)
    ]


class BatchLatencyGenerator(ScriptedGenerator):
    """Scripted output, but each call sleeps ``per_request_s`` per request (a busy model)."""

    def __init__(self, per_request_s: float) -> None:
        super().__init__(policy)
        self.per_request_s = per_request_s

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        time.sleep(self.per_request_s * len(requests))
        return super().generate(requests)


def run(groups: int, per_request_s: float, problems: int, executor: SandboxExecutor) -> dict:
    config = SearchConfig(
        num_rollouts=6, num_candidates=4, unvisited="inf", max_depth=8, pipeline_groups=groups
    )
    solver = MCTSSolver(BatchLatencyGenerator(per_request_s), executor=executor, config=config)
    questions = [f"Problem {i}: a three-step computation." for i in range(problems)]
    t0 = time.perf_counter()
    results = solver.solve_batch(questions)
    wall = time.perf_counter() - t0
    batch = results[0].stats["batch"]
    return {
        "wall": wall,
        "gen": batch["time_generate_s"],
        "exec": batch["time_execute_s"],
        "requests": batch["generation_requests"],
        "executions": batch["executions"],
        "trees": [r.tree.to_dict() for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with SandboxExecutor(num_workers=args.workers) as executor:
        # calibrate: make generation as slow as execution on this workload
        probe = run(1, 0.0, args.problems, executor)
        per_request = probe["exec"] / max(probe["requests"], 1)
        rows = {g: run(g, per_request, args.problems, executor) for g in (1, 2, 3)}
    base = rows[1]
    same = all(rows[g]["trees"] == base["trees"] for g in rows)
    lines = [
        f"{args.problems} problems, MCTS 6 rollouts x 4 candidates, sandbox executor with "
        f"{args.workers} workers; generator sleeps {1000 * per_request:.2f} ms per request "
        "(calibrated to the executor's time).",
        "",
        "| pipeline groups | wall s | generate s | execute s | ratio to sequential |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for g, r in rows.items():
        lines.append(
            f"| {g} | {r['wall']:.2f} | {r['gen']:.2f} | {r['exec']:.2f} | "
            f"{r['wall'] / base['wall']:.2f} |"
        )
    best = min(rows[g]["wall"] for g in (2, 3)) / base["wall"]
    lines += [
        "",
        f"Trees identical to the sequential run: {same}. Best pipelined ratio {best:.2f} "
        "(target <= 0.70).",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        append_section("Pipelining (benchmarks/pipeline.py)", text)


if __name__ == "__main__":
    main()
