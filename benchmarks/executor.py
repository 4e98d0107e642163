"""Executor throughput versus step depth: incremental sandbox against re-running the ancestors.

What is measured. A search expands nodes at some depth ``d``: each request is one candidate
step whose context is its ``d - 1`` ancestor steps. Every step does a small, realistic piece of
work (a sympy expansion and polynomial coefficients, plus integer arithmetic), and the first
step imports sympy like real solutions do. For each depth in ``--depths`` one batch of
``trajectories x siblings`` fresh candidate steps is timed, ``--reps`` times, on:

* ``incremental``: :class:`SandboxExecutor` (forks the state its workers keep per prefix; the
  contexts were executed beforehand, as they are during a search when their nodes were made);
* ``warm re-exec``: :class:`SandboxExecutor` with ``incremental=False`` (warm sandbox workers,
  but every request re-runs its whole context): isolates the value of keeping state;
* ``fresh process``: :class:`SubprocessExecutor`, a new ``python`` per request re-running all
  ancestor code (the reference implementation's approach): the baseline of the targets.

Targets (from the issue): at depth 8 the incremental executor is at least 5x the fresh-process
baseline, and its per-step time at depth 16 is within 1.5x of its time at depth 1.

Run ``python benchmarks/executor.py`` (``--help`` for options); it prints the table and appends
a section to ``docs/benchmarks.md`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rstar_math.executors import SandboxExecutor, SubprocessExecutor
from rstar_math.interfaces import ExecRequest, ExecResult, Executor

_LOG = logging.getLogger("benchmarks.executor")
_ROOT = Path(__file__).resolve().parents[1]


def first_step(trajectory: int) -> str:
    return (
        "# Step 1: set up the symbols\n"
        "import sympy as sp\n"
        "import math\n"
        "x = sp.Symbol('x')\n"
        f"acc = {trajectory}\n"
    )


def step(trajectory: int, index: int, variant: int = 0) -> str:
    """Step ``index`` (>= 2) of a trajectory; ``variant`` makes distinct candidate siblings."""
    k = 3 + (trajectory + index + variant) % 5
    return (
        f"# Step {index}: expand a polynomial and combine its coefficients\n"
        f"p{index} = sp.expand((x + {index + variant}) ** 3 - {k} * x)\n"
        f"c{index} = sp.Poly(p{index}, x).all_coeffs()\n"
        f"acc = (acc + sum(int(c) for c in c{index}) + math.gcd({6 * index}, {k})) % 100003\n"
        f"print(acc)\n"
    )


def context(trajectory: int, depth: int) -> tuple[str, ...]:
    """The ``depth - 1`` ancestor blocks of a step at ``depth``."""
    blocks = [first_step(trajectory)] if depth > 1 else []
    blocks += [step(trajectory, i) for i in range(2, depth)]
    return tuple(blocks)


def candidates(depth: int, trajectories: int, siblings: int, rep: int) -> list[ExecRequest]:
    out = []
    for t in range(trajectories):
        ctx = context(t, depth)
        for s in range(siblings):
            variant = 1 + rep * siblings + s
            code = first_step(t) + f"acc += {variant}\n" if depth == 1 else step(t, depth, variant)
            out.append(ExecRequest(code, ctx))
    return out


def warm_contexts(executor: Executor, depth: int, trajectories: int) -> None:
    """Execute every trajectory's context chain, as a search did when it created the nodes."""
    for level in range(2, depth + 1):
        requests = []
        for t in range(trajectories):
            ctx = context(t, level)
            requests.append(ExecRequest(ctx[-1], ctx[:-1]))
        _check(executor.execute_batch(requests))


def _check(results: Sequence[ExecResult]) -> None:
    bad = [r for r in results if not r.ok]
    if bad:
        raise RuntimeError(f"benchmark step failed: {bad[0]}")


def time_batches(
    executor: Executor, depth: int, trajectories: int, siblings: int, reps: int, warm: bool
) -> float:
    """Median seconds per step (batch wall time / batch size) over ``reps`` batches."""
    if warm:
        warm_contexts(executor, depth, trajectories)
    per_step = []
    for rep in range(reps):
        batch = candidates(depth, trajectories, siblings, rep)
        start = time.perf_counter()
        results = executor.execute_batch(batch)
        elapsed = time.perf_counter() - start
        _check(results)
        per_step.append(elapsed / len(batch))
    return statistics.median(per_step)


def machine() -> str:
    import numpy
    import RestrictedPython  # noqa: F401
    import sympy

    try:
        from importlib.metadata import version

        rp_version = version("RestrictedPython")
    except Exception:  # metadata may be missing in odd installs
        rp_version = "?"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs (load average {load} when the report was written), "
        f"Python {platform.python_version()}, {platform.platform()}; "
        f"numpy {numpy.__version__}, sympy {sympy.__version__}, RestrictedPython {rp_version}"
    )


def run(args: argparse.Namespace) -> str:
    depths = [int(d) for d in args.depths.split(",")]
    rows: dict[str, dict[int, float]] = {"incremental": {}, "warm re-exec": {}, "fresh process": {}}
    common = {"num_workers": args.workers, "timeout_s": 60.0}
    with SandboxExecutor(**common) as incremental:
        # warm-up: worker start, first sympy calls, fork paths
        time_batches(incremental, 2, args.trajectories, args.siblings, 1, warm=True)
        for depth in depths:
            rows["incremental"][depth] = time_batches(
                incremental, depth, args.trajectories, args.siblings, args.reps, warm=True
            )
            _LOG.info("incremental depth %d: %.1f ms/step", depth, 1e3 * rows["incremental"][depth])
    with SandboxExecutor(incremental=False, **common) as warm:
        time_batches(warm, 2, args.trajectories, args.siblings, 1, warm=False)
        for depth in depths:
            rows["warm re-exec"][depth] = time_batches(
                warm, depth, args.trajectories, args.siblings, args.reps, warm=False
            )
            _LOG.info(
                "warm re-exec depth %d: %.1f ms/step", depth, 1e3 * rows["warm re-exec"][depth]
            )
    with SubprocessExecutor(timeout_s=120.0, num_workers=args.workers) as fresh:
        for depth in depths:
            rows["fresh process"][depth] = time_batches(
                fresh, depth, args.trajectories, args.siblings, args.baseline_reps, warm=False
            )
            _LOG.info("fresh depth %d: %.1f ms/step", depth, 1e3 * rows["fresh process"][depth])
    return report(rows, depths, args)


def report(rows: dict[str, dict[int, float]], depths: list[int], args: argparse.Namespace) -> str:
    inc, fresh, warm = rows["incremental"], rows["fresh process"], rows["warm re-exec"]
    lines = [
        f"## Executor: steps per second vs depth ({dt.datetime.now().strftime('%Y-%m-%d %H:%M')})",
        "",
        f"Machine: {machine()}.",
        f"Workload: `benchmarks/executor.py` with {args.workers} workers, batches of "
        f"{args.trajectories} trajectories x {args.siblings} candidate steps, median of "
        f"{args.reps} batches ({args.baseline_reps} for the fresh-process baseline); each step "
        "expands a sympy polynomial and combines its coefficients; step 1 imports sympy.",
        "",
        "| depth | incremental steps/s (ms/step) | warm re-exec steps/s | fresh process steps/s "
        "| incremental / fresh | incremental / warm re-exec |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d in depths:
        lines.append(
            f"| {d} | {1 / inc[d]:.1f} ({1e3 * inc[d]:.1f}) | {1 / warm[d]:.1f} "
            f"| {1 / fresh[d]:.2f} | {fresh[d] / inc[d]:.1f}x | {warm[d] / inc[d]:.1f}x |"
        )
    lines.append("")
    checks = []
    if 8 in depths:
        ratio8 = fresh[8] / inc[8]
        checks.append(
            f"- depth 8, incremental vs fresh process: {ratio8:.1f}x "
            f"(target >= 5x: {'met' if ratio8 >= 5 else 'NOT met'})"
        )
    if 1 in depths and 16 in depths:
        growth = inc[16] / inc[1]
        checks.append(
            f"- incremental per-step time, depth 16 / depth 1: {growth:.2f} "
            f"(target <= 1.5: {'met' if growth <= 1.5 else 'NOT met'})"
        )
    lines += checks
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=max(1, min(os.cpu_count() or 1, 8)))
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--siblings", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--baseline-reps", type=int, default=2)
    parser.add_argument("--depths", default="1,4,8,16")
    parser.add_argument("--output", type=Path, default=_ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    section = run(args)
    sys.stdout.write(section + "\n")
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        exists = args.output.exists()
        with args.output.open("a", encoding="utf-8") as fh:
            if not exists:
                fh.write("# Benchmarks\n\n")
            fh.write("\n" + section)
        _LOG.info("appended to %s", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
