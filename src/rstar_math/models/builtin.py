"""The built-in miniature model: a tiny policy and PPM shipped inside the package.

``rstar-math solve "QUESTION"`` and :meth:`MCTSSolver.default` run with no arguments because the
package carries a complete rStar-Math pipeline in miniature (issue 7): a ~1M-parameter Qwen2
policy with its own byte-level BPE tokenizer and a PPM of the same size, trained from scratch on
the CPU by the library's own SFT trainer, PPM trainer and self-evolution runner on the synthetic
word-problem domain of :mod:`rstar_math.data.synthetic` (``scripts/build_miniature.py`` rebuilds
both; ``benchmarks/miniature.py`` measures them).

**Outside that domain the model is useless.** It knows multi-step word problems about people
having, buying, earning, reading or packing things (comparisons such as "3 fewer than twice as
many", rates, ratios and shares, small equations) and nothing else. For real math, plug in a real
model::

    from rstar_math import MCTSSolver, SearchConfig
    from rstar_math.generators import HFGenerator
    from rstar_math.scorers import PPMScorer

    solver = MCTSSolver(HFGenerator("Qwen/Qwen2.5-Math-7B-Instruct"),
                        scorer=PPMScorer.from_pretrained("path/to/ppm"),
                        config=SearchConfig.paper_eval())

Usage::

    from rstar_math.models.builtin import default_solver

    with default_solver() as solver:
        result = solver.solve("Sam has 7 pencils. Tara has twice as many pencils as Sam. "
                              "How many pencils does Tara have?")
        print(result.answer)

Tiny models run faster with one torch intra-op thread (``torch.set_num_threads(1)``): with more,
OpenMP spin-waiting makes them several times slower on a busy machine. The library does not
change that global setting for you; the ``rstar-math`` command does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstar_math.search.config import SearchConfig

if TYPE_CHECKING:
    from rstar_math.interfaces import Executor
    from rstar_math.solver import MCTSSolver

__all__ = [
    "MINIATURE_DIR",
    "builtin_available",
    "builtin_paths",
    "default_search_config",
    "default_solver",
]

#: Where the shipped checkpoints live: ``policy/`` (a causal LM directory) and ``ppm/`` (a PPM
#: checkpoint directory), each with safetensors weights, config and tokenizer.
MINIATURE_DIR = Path(__file__).resolve().parent / "miniature"

#: Environment variable that points the built-in model at another directory holding ``policy/``
#: and ``ppm/`` (e.g. a freshly rebuilt model before it is copied into the package).
ENV_DIR = "RSTAR_MINIATURE_DIR"

_POLICY_FILES = ("config.json", "model.safetensors", "tokenizer.json")
_PPM_FILES = ("config.json", "model.safetensors", "ppm_config.json", "tokenizer.json")

#: Search settings tuned for the miniature model on its domain (see ``benchmarks/miniature.py``):
#: the paper's test-time shape (``SearchConfig.paper_eval``: 32 candidates per expansion at
#: temperature 1.0) cut to one rollout. The policy's mistakes are slips it makes in most
#: samples, so 8 rollouts of 4 candidates rarely hold the right step; 32 candidates usually do,
#: and the PPM picks it (on hard problems 76% against 48% for 8 x 4, at 8.9 s a problem).
_DEFAULT_SEARCH: dict[str, Any] = {
    "algorithm": "mcts",
    "num_rollouts": 1,
    "num_candidates": 32,
    "temperature": 1.0,
    "c_puct": 2.0,
    # one step per sentence of the question: a long problem has 13 and more
    "max_depth": 16,
    # a step is a quoted sentence and one equation (about 40 tokens); the final step's solve
    # about 60
    "max_step_tokens": 256,
    "answer_selection": "best",
}


def _root() -> Path:
    env = os.environ.get(ENV_DIR)
    return Path(env).expanduser() if env else MINIATURE_DIR


def builtin_paths() -> tuple[str, str] | None:
    """``(policy_dir, ppm_dir)`` of the shipped miniature model, or None when it is absent.

    The directory is the package's ``models/miniature`` unless the environment variable
    ``RSTAR_MINIATURE_DIR`` names another one. Both checkpoints must be complete (config,
    safetensors weights, tokenizer; the PPM's ``ppm_config.json``).
    """
    root = _root()
    policy, ppm = root / "policy", root / "ppm"
    if not all((policy / f).is_file() for f in _POLICY_FILES):
        return None
    if not all((ppm / f).is_file() for f in _PPM_FILES):
        return None
    return str(policy), str(ppm)


def builtin_available() -> bool:
    """Whether the shipped miniature model is present (see :func:`builtin_paths`)."""
    return builtin_paths() is not None


def default_search_config(**overrides: Any) -> SearchConfig:
    """The search the built-in model uses: PPM-guided MCTS sized for a CPU.

    Keyword arguments override single fields (``num_rollouts=16``, ``algorithm="beam"`` ...).
    """
    return SearchConfig.from_dict({**_DEFAULT_SEARCH, **overrides})


def _require_paths() -> tuple[str, str]:
    paths = builtin_paths()
    if paths is None:
        raise FileNotFoundError(
            f"the built-in miniature model is not installed (expected policy/ and ppm/ under "
            f"{_root()}); rebuild it with `python scripts/build_miniature.py` from a source "
            "checkout, or pass your own generator: MCTSSolver(HFGenerator(path), ...)"
        )
    return paths


def default_solver(
    *,
    executor: Executor | None = None,
    use_ppm: bool = True,
    device: str = "cpu",
    seed: int | None = 0,
    max_batch_size: int = 64,
    num_trees: int = 1,
    config: SearchConfig | None = None,
    **search_overrides: Any,
) -> MCTSSolver:
    """An :class:`~rstar_math.solver.MCTSSolver` over the built-in policy and PPM.

    Builds :class:`~rstar_math.generators.HFGenerator` on the shipped policy,
    :class:`~rstar_math.scorers.PPMScorer` on the shipped PPM (``use_ppm=False`` leaves it out,
    answers are then chosen by majority vote) and, unless ``executor`` is given, the default
    sandboxed executor (started on first use, stopped by ``close()`` / the context manager).
    ``config`` replaces the tuned search settings; ``search_overrides`` change single fields of
    them (``num_rollouts=16``). ``seed`` makes sampling reproducible (``None``: fresh draws).

    Raises FileNotFoundError when the model is not installed.
    """
    from rstar_math.generators import HFGenerator
    from rstar_math.solver import MCTSSolver

    policy, ppm = _require_paths()
    if config is None:
        overrides = dict(search_overrides)
        if not use_ppm:
            overrides.setdefault("answer_selection", "majority")
        if seed is not None:
            overrides.setdefault("seed", seed)
        config = default_search_config(**overrides)
    elif search_overrides:
        config = config.replace(**search_overrides)
    if config.algorithm == "beam" and not use_ppm:
        raise ValueError("beam search needs the PPM: leave use_ppm=True")
    generator = HFGenerator(policy, device=device, max_batch_size=max_batch_size, seed=seed)
    scorer = None
    if use_ppm:
        from rstar_math.scorers import PPMScorer

        scorer = PPMScorer.from_pretrained(ppm, device=device, batch_size=32)
    return MCTSSolver(
        generator,
        scorer=scorer,
        executor=executor,
        config=config,
        num_trees=num_trees,
    )
