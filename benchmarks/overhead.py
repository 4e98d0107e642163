"""Overhead: the share of wall time spent outside generator, executor and scorer calls.

A real tiny policy (``benchmarks/_models.py``), a PPM made from it, and the sandbox executor run
PPM-guided MCTS end to end on a batch of synthetic problems. Everything that is not inside one of
the three backend calls (selection, bookkeeping, prompt assembly, parsing, grading, back-up) is
overhead. Target (issue 8): under 5% of wall time. Run with ``--pipeline-groups 2`` to overlap
the phases (the backend times then add up to more than the wall time).

Run: python benchmarks/overhead.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import append_section
from _models import CACHE, bench_policy, bench_problems

from rstar_math import MCTSSolver, SearchConfig
from rstar_math.executors import SandboxExecutor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import torch

    from rstar_math.generators import HFGenerator
    from rstar_math.scorers import PPMModel, PPMScorer

    torch.set_num_threads(2)
    path = bench_policy()
    ppm_dir = CACHE / "ppm_from_policy"
    if not (ppm_dir / "ppm_config.json").exists():
        PPMModel.from_policy(path).save_pretrained(ppm_dir)
    problems = bench_problems(args.problems)
    config = SearchConfig(
        num_rollouts=args.rollouts, num_candidates=args.candidates, max_step_tokens=96, max_depth=12
    )
    with SandboxExecutor(num_workers=2) as executor:
        solver = MCTSSolver(
            HFGenerator(path, device="cpu"),
            scorer=PPMScorer.from_pretrained(str(ppm_dir)),
            executor=executor,
            config=config,
        )
        solver.solve(problems[0][0])  # warm-up
        t0 = time.perf_counter()
        results = solver.solve_batch([q for q, _ in problems])
        wall = time.perf_counter() - t0
    batch = results[0].stats["batch"]
    gen, exe, sco = batch["time_generate_s"], batch["time_execute_s"], batch["time_score_s"]
    outside = wall - gen - exe - sco
    lines = [
        f"{args.problems} synthetic problems, PPM-guided MCTS {args.rollouts} rollouts x "
        f"{args.candidates} candidates, HF tiny policy + PPM, sandbox executor.",
        "",
        "| wall s | generate s | execute s | score s | outside s | outside share |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {wall:.2f} | {gen:.2f} | {exe:.2f} | {sco:.2f} | {outside:.3f} | "
        f"{100 * outside / wall:.2f}% |",
        "",
        f"{batch['waves']} waves, {batch['generation_requests']} expansions, "
        f"{batch['executions']} executions, {batch['scored']} scored nodes. Target: < 5% outside.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        append_section("Overhead (benchmarks/overhead.py)", text)


if __name__ == "__main__":
    main()
