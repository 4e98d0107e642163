"""A small real policy for the benchmarks: the built-in model, else a quickly trained tiny one.

The benchmarks need a model that writes valid code-augmented CoT steps (a random one only emits
invalid candidates). The shipped miniature model is used when installed; otherwise a tiny Qwen2 is
fine-tuned for a minute on teacher solutions of the synthetic domain and cached on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE = Path(os.environ.get("RSTAR_BENCH_CACHE", Path.home() / ".cache" / "rstar_math_bench"))


def bench_policy() -> str:
    """Path of a policy directory that writes valid steps for synthetic problems.

    ``RSTAR_BENCH_POLICY`` names one explicitly; else the built-in model; else a quick tiny one.
    """
    explicit = os.environ.get("RSTAR_BENCH_POLICY")
    if explicit:
        return explicit
    try:
        from rstar_math.models.builtin import builtin_paths

        paths = builtin_paths()
    except ImportError:
        paths = None
    if paths is not None:
        return paths[0]
    final = CACHE / "policy" / "final"
    if (final / "config.json").exists():
        return str(final)
    import torch

    from rstar_math.data.synthetic import corpus, make_splits, to_sft_records
    from rstar_math.models.tiny import build_tiny_model, build_tiny_tokenizer, save_tiny_model
    from rstar_math.training import SFTTrainingConfig, train_sft

    torch.set_num_threads(2)
    splits = make_splits(seed=0, n_train=600, n_val=10, n_hard=10)
    tok = build_tiny_tokenizer(corpus(600, seed=1), vocab_size=600)
    model = build_tiny_model(tok, hidden_size=96, num_layers=3, num_heads=4, num_kv_heads=2)
    base = save_tiny_model(model, tok, CACHE / "base")
    config = SFTTrainingConfig(
        output_dir=str(CACHE / "policy"),
        learning_rate=3e-3,
        max_steps=300,
        batch_size=16,
        warmup_steps=20,
        device="cpu",
        progress=False,
    )
    result = train_sft(str(base), to_sft_records(splits["train"]), config)
    return str(result.model_dir)


def bench_problems(n: int, split: str = "val", seed: int = 0) -> list[tuple[str, str]]:
    """``n`` synthetic (question, answer) pairs."""
    from rstar_math.data.synthetic import make_splits

    splits = make_splits(seed=seed, n_train=10, n_val=max(n, 10), n_hard=max(n, 10))
    return [(p.question, p.answer) for p in splits[split][:n]]
