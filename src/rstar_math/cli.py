"""The ``rstar-math`` command line.

Subcommands: ``solve``, ``eval``, ``generate``, ``ref-pairs``, ``train-sft``, ``train-ppm``,
``evolve``. Each takes
``--config FILE`` (YAML or JSON) whose keys mirror the library's dataclasses; flags given on the
command line win over the file. Exit codes: 0 success, 1 a run failed, 2 bad usage or input,
130 interrupted (everything written so far is flushed and the run can be resumed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

logger = logging.getLogger("rstar_math.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def _read_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"config file not found: {path}")
    text = file.read_text(encoding="utf-8")
    if file.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise UsageError("YAML configs need pyyaml: pip install pyyaml") from exc
        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the config must be a mapping of keys to values")
    return data


def _search_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("algorithm", "num_rollouts", "num_candidates", "max_depth", "temperature", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    if getattr(args, "selection", None):
        out["answer_selection"] = args.selection
    return out


def _solver_spec(args: argparse.Namespace, config: dict[str, Any]) -> Any:
    from rstar_math.evolution.spec import SolverSpec
    from rstar_math.search.config import SearchConfig

    data = dict(config)
    if getattr(args, "policy", None):
        data["policy"] = args.policy
    if getattr(args, "ppm", None):
        data["ppm"] = args.ppm
    if getattr(args, "backend", None):
        data["backend"] = args.backend
    if getattr(args, "device", None):
        data["device"] = args.device
    search_base: dict[str, Any] = {}
    builtin = "policy" not in data
    if builtin:
        from rstar_math.models.builtin import builtin_paths, default_search_config

        paths = builtin_paths()
        if paths is None:
            raise UsageError(
                "no --policy given and the built-in model is not installed: pass --policy "
                "(and --ppm), or rebuild it with `python scripts/build_miniature.py`"
            )
        data["policy"], default_ppm = paths
        data.setdefault("ppm", default_ppm)
        # the search the built-in model was tuned for (a file's or a flag's fields still win)
        search_base = default_search_config().to_dict()
        if not data.get("ppm"):  # the config turned the PPM off: vote instead
            search_base["answer_selection"] = "majority"
    search = SearchConfig.from_dict(
        {**search_base, **data.pop("search", {}), **_search_overrides(args)}
    )
    _set_threads(getattr(args, "threads", None), tiny_model=builtin)
    policy = data["policy"]
    if data.get("backend", "hf") in ("hf", "vllm") and not Path(policy).exists():
        raise UsageError(f"policy model not found: {policy} (give a model directory)")
    if data.get("ppm") and ":" not in str(data["ppm"]) and not Path(data["ppm"]).exists():
        raise UsageError(f"PPM not found: {data['ppm']} (give a PPM directory saved by train-ppm)")
    return SolverSpec.from_dict({**data, "search": search})


def _set_threads(threads: int | None, *, tiny_model: bool) -> None:
    """torch intra-op threads: ``--threads``, else 1 for the built-in model.

    A model of about a million parameters runs several times faster on one thread than on
    several: its matrices are too small to split, and OpenMP's spin-waiting competes with the
    sandbox workers for the cores.
    """
    if threads is None and not tiny_model:
        return
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads or 1)


def _add_search_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", help="policy model directory (default: the built-in model)")
    p.add_argument(
        "--ppm", help="PPM directory (default: the built-in PPM with the built-in policy)"
    )
    p.add_argument("--backend", choices=("hf", "vllm", "openai", "factory"))
    p.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--algorithm", choices=("mcts", "beam", "best_of_n", "greedy"))
    p.add_argument("--num-rollouts", dest="num_rollouts", type=int)
    p.add_argument("--num-candidates", dest="num_candidates", type=int)
    p.add_argument("--max-depth", dest="max_depth", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--selection", choices=("best", "majority", "weighted_majority"), help="answer selection"
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: 1 with the built-in model, else torch's default)",
    )


# --------------------------------------------------------------------------- commands


def cmd_solve(args: argparse.Namespace) -> int:
    spec = _solver_spec(args, _read_config(args.config))
    with spec.build() as solver:
        result = solver.solve(args.question, reference=args.reference)
    if args.json:
        out = {
            "question": result.question,
            "answer": result.answer,
            "correct": result.correct,
            "solution": result.trajectory.text if result.trajectory else None,
            "stats": result.stats,
        }
        print(json.dumps(out, indent=2, default=str))
    else:
        if result.trajectory is not None:
            print(result.trajectory.text.strip())
            print()
        print(f"Answer: {result.answer}")
        if result.correct is not None:
            print(f"Correct: {result.correct}")
    if args.tree:
        Path(args.tree).write_text(result.tree.to_json(indent=1), encoding="utf-8")
    return EXIT_OK if result.answer is not None else EXIT_FAILED


def _problems(args: argparse.Namespace) -> Any:
    from rstar_math.data import load_problems

    problems = load_problems(args.dataset, fmt=args.format)
    if args.limit:
        problems = problems[: args.limit]
    return problems


def cmd_eval(args: argparse.Namespace) -> int:
    from rstar_math.evolution.evaluate import evaluate

    spec = _solver_spec(args, _read_config(args.config))
    problems = _problems(args)
    ks = [int(k) for k in args.k.split(",")]
    with spec.build() as solver:
        report = evaluate(
            solver,
            problems,
            ks=ks,
            results_path=args.output,
            chunk_size=args.chunk_size,
            show_progress=not args.no_progress,
        )
    print(report.table())
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from rstar_math.evolution.generate import generate_trees

    spec = _solver_spec(args, _read_config(args.config))
    problems = _problems(args)
    with spec.build() as solver:
        n = generate_trees(
            solver,
            problems,
            args.output,
            chunk_size=args.chunk_size,
            use_reference=not args.no_reference,
            show_progress=not args.no_progress,
        )
    print(f"{n} problems searched; trees in {args.output}")
    return EXIT_OK


def cmd_ref_pairs(args: argparse.Namespace) -> int:
    from rstar_math.executors import SandboxExecutor
    from rstar_math.generators import HFGenerator
    from rstar_math.training import (
        ReferencePairsConfig,
        read_jsonl,
        reference_step_pairs,
        write_jsonl,
    )

    if not Path(args.model).exists():
        raise UsageError(f"policy model not found: {args.model} (give a model directory)")
    if not Path(args.solutions).is_file():
        raise UsageError(f"solutions file not found: {args.solutions}")
    records = list(read_jsonl(args.solutions))
    if args.limit is not None:
        records = records[: args.limit]
    data = _read_config(args.config)
    known = set(ReferencePairsConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(
            f"unknown ReferencePairsConfig key(s): {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(sorted(known))})"
        )
    for name in ("samples", "temperature", "seed"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    config = ReferencePairsConfig(**data)
    _set_threads(args.threads, tiny_model=False)
    generator = HFGenerator(args.model, device=args.device, seed=args.seed)
    with SandboxExecutor() as executor:
        result = reference_step_pairs(records, generator, executor, config)
    write_jsonl(args.output, result.pairs)
    summary = result.summary()
    print(
        f"{summary['pairs']} pairs from {summary['problems']} reference solutions "
        f"({summary['skipped_problems']} skipped) in {args.output}; proposals: "
        f"{summary['right']} right, {summary['wrong']} wrong, {summary['unlabeled']} unlabeled, "
        f"{summary['invalid']} invalid"
    )
    return EXIT_OK


def _train_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="+", help="JSONL file(s) of training records")
    p.add_argument("--model", required=True, help="model directory to start from")
    p.add_argument("--output", required=True, help="output directory (checkpoints and final/)")
    p.add_argument("--eval", dest="eval_file", help="held-out JSONL file")
    p.add_argument("--max-steps", dest="max_steps", type=int)
    p.add_argument("--learning-rate", dest="learning_rate", type=float)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--device")


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for name in ("max_steps", "learning_rate", "batch_size", "device"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    if args.no_progress:
        out["progress"] = False
    return out


def cmd_train_sft(args: argparse.Namespace) -> int:
    from rstar_math.training import train_sft_from_files

    if not Path(args.model).exists():
        raise UsageError(f"model not found: {args.model}")
    result = train_sft_from_files(
        args.data,
        args.model,
        args.output,
        config=args.config,
        eval_jsonl=args.eval_file,
        **_train_overrides(args),
    )
    print(f"policy saved to {result.model_dir} after {result.global_step} steps")
    if result.final_eval_loss is not None:
        print(f"held-out loss: {result.initial_eval_loss:.4f} -> {result.final_eval_loss:.4f}")
    return EXIT_OK


def cmd_train_ppm(args: argparse.Namespace) -> int:
    from rstar_math.training import train_ppm_from_files

    if not Path(args.model).exists():
        raise UsageError(f"model not found: {args.model}")
    result = train_ppm_from_files(
        args.data,
        args.model,
        args.output,
        config=args.config,
        eval_jsonl=args.eval_file,
        reference_format=args.reference_format,
        **_train_overrides(args),
    )
    print(f"PPM saved to {result.model_dir} after {result.global_step} steps")
    if result.final_accuracy is not None:
        print(
            f"held-out pair accuracy: {result.initial_accuracy:.3f} -> {result.final_accuracy:.3f}"
        )
    return EXIT_OK


def cmd_evolve(args: argparse.Namespace) -> int:
    from rstar_math.evolution.rounds import EvolutionConfig, EvolutionRunner

    data = _read_config(args.config)
    if args.problems:
        data["problems"] = args.problems
    if args.base_policy:
        data["base_policy"] = args.base_policy
    if args.no_progress:
        data["show_progress"] = False
    for key in ("problems", "base_policy", "rounds"):
        if key not in data:
            raise UsageError(f"evolve needs '{key}' (in --config or as a flag)")
    config = EvolutionConfig.from_dict(data)
    runner = EvolutionRunner(config, args.run_dir)
    manifest = runner.run(rounds=args.rounds)
    for name, state in manifest["rounds"].items():
        stages = ", ".join(state["stages"])
        print(f"{name}: {stages}")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rstar-math",
        description=(
            "rStar-Math style MCTS math reasoning: solve, eval, generate, ref-pairs, train, evolve."
        ),
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("solve", help="solve one problem and print the solution")
    p.add_argument("question")
    p.add_argument("--reference", help="reference answer: grade the result")
    p.add_argument("--config", help="YAML/JSON: SolverSpec keys, 'search' holds SearchConfig keys")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--tree", help="write the search tree as JSON to this file")
    _add_search_flags(p)
    p.set_defaults(func=cmd_solve)

    for name, func, helptext in (
        ("eval", cmd_eval, "accuracy on a problem set"),
        ("generate", cmd_generate, "search every problem, write trees as JSONL (resumable)"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("dataset", help="problem file: reference JSON, GSM8K/MATH/plain JSONL")
        p.add_argument(
            "--format", default="auto", choices=("auto", "reference", "gsm8k", "math", "jsonl")
        )
        p.add_argument("--limit", type=int, help="only the first N problems")
        p.add_argument("--config", help="YAML/JSON: SolverSpec keys")
        p.add_argument("--chunk-size", dest="chunk_size", type=int, default=32)
        p.add_argument("--no-progress", action="store_true")
        _add_search_flags(p)
        if name == "eval":
            p.add_argument("--output", help="per-problem results JSONL (resumable)")
            p.add_argument("--report", help="write the accuracy report as JSON")
            p.add_argument("-k", default="1,4,8,16,64", help="comma-separated k values")
        else:
            p.add_argument("--output", required=True, help="trees JSONL (appended, resumable)")
            p.add_argument(
                "--no-reference", action="store_true", help="do not grade (test-time trees)"
            )
        p.set_defaults(func=func)

    p = sub.add_parser(
        "ref-pairs", help="PPM pairs: policy proposals checked against reference solutions"
    )
    p.add_argument(
        "solutions", help="JSONL of {question, response} records with complete solutions"
    )
    p.add_argument("--model", required=True, help="policy model directory that proposes steps")
    p.add_argument("--output", required=True, help="pairs JSONL to write (for train-ppm)")
    p.add_argument("--config", help="YAML/JSON: ReferencePairsConfig keys")
    p.add_argument("--samples", type=int, help="proposals per reference prefix (default 4)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0.7)")
    p.add_argument("--limit", type=int, help="only the first N solutions")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.set_defaults(func=cmd_ref_pairs)

    p = sub.add_parser("train-sft", help="fine-tune a policy on SFT records")
    _train_common(p)
    p.add_argument("--config", help="YAML/JSON: SFTTrainingConfig keys")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train_sft)

    p = sub.add_parser("train-ppm", help="train a PPM on preference pairs")
    _train_common(p)
    p.add_argument("--config", help="YAML/JSON: PPMTrainingConfig keys")
    p.add_argument(
        "--reference-format",
        action="store_true",
        help="the data is the reference's {prompt, pos, neg} format",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train_ppm)

    p = sub.add_parser("evolve", help="run (or resume) self-evolution rounds")
    p.add_argument("--config", required=True, help="YAML/JSON: EvolutionConfig keys")
    p.add_argument("--run-dir", dest="run_dir", required=True, help="the run directory")
    p.add_argument("--problems", help="problem file (overrides the config)")
    p.add_argument("--base-policy", dest="base_policy")
    p.add_argument("--rounds", type=int, help="run only the first N rounds")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_evolve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(
            "interrupted: results so far are saved; run the same command to resume", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    except (UsageError, ValueError, FileNotFoundError, ImportError) as exc:
        print(f"rstar-math {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
