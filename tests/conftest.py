"""Shared session fixtures: tiny real models built on the fly (no network, nothing downloaded).

* ``tiny_tokenizer``: a byte-level BPE tokenizer trained on code-augmented CoT text (the real SFT
  examples in ``../shared/data/rstar`` when present, else a built-in corpus) with the format's
  markers as special tokens.
* ``tiny_policy``: a randomly initialised 2-layer Qwen2 causal LM (float32, eval mode) over it.
* ``tiny_trained_policy``: a tiny Qwen2 overfit on :data:`TINY_PROBLEMS`, so that greedy decoding
  from ``PromptTemplate.sft().render(question)`` writes that problem's solution step by step
  (``<code> ... <end_of_step> ... <end_of_code> ... <end_of_answer>``) and then EOS. Useful
  wherever a real model must produce valid steps (stop markers, end-to-end search).
* ``tiny_trained_policy_dir``: that model saved as a ``from_pretrained`` directory.

Nothing here imports torch at import time; the fixtures skip the requesting test when torch or
transformers are missing. Treat the returned models as read-only (they are shared by every test of
the session); copy them (``copy.deepcopy``) before changing weights. The fixtures run torch with
one intra-op thread: tiny models are faster that way, and with two threads OpenMP spin-waiting
makes them tens of times slower on a busy 2-core machine.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DATA_DIR = Path(
    os.environ.get(
        "RSTAR_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "rstar"
    )
)

#: (question, solution, answer): short solutions the trained tiny policy reproduces greedily.
TINY_PROBLEMS: tuple[tuple[str, str, str], ...] = (
    (
        "What is 2 + 3?",
        "<code>\n# Step 1: Add the numbers\nx = 2 + 3\n<end_of_step>\n\n"
        "# Now print the final answer\nprint(x)\n<end_of_code>\n<output>5<end_of_output>\n"
        "<answer>The answer is \\boxed{5}.<end_of_answer>",
        "5",
    ),
    (
        "What is 4 times 6?",
        "<code>\n# Step 1: Multiply the numbers\ny = 4 * 6\n<end_of_step>\n\n"
        "# Step 2: Double check\nz = y\n<end_of_step>\n\n"
        "# Now print the final answer\nprint(z)\n<end_of_code>\n<output>24<end_of_output>\n"
        "<answer>The product is \\boxed{24}.<end_of_answer>",
        "24",
    ),
)

_BUILTIN_CORPUS: tuple[str, ...] = (
    "Find x such that 2x + 3 = 11.",
    "<code>\n# Step 1: Move 3 to the right side\nrhs = 11 - 3\n<end_of_step>\n\n"
    "# Step 2: Divide by 2\nx = rhs / 2\n<end_of_step>\n\n"
    "# Now print the final answer\nprint(x)\n<end_of_code>\n<output>4.0<end_of_output>\n"
    "<answer>x is \\boxed{4}.<end_of_answer>",
    "import sympy as sp\n# Define the symbols\nx, y = sp.symbols('x y')\n"
    "solution = sp.solve(sp.Eq(2 * x + 3, 11), x)\nprint(solution)\n",
)


def _torch() -> Any:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    torch.set_num_threads(1)
    return torch


def tiny_corpus() -> list[str]:
    """Text to train tiny tokenizers on: real SFT examples when available, plus the problems."""
    from rstar_math.format import PromptTemplate

    texts: list[str] = []
    path = DATA_DIR / "sft_data_examples.json"
    if path.is_file():
        for record in json.loads(path.read_text(encoding="utf-8")):
            texts.append(record["query"])
            texts.append(record["response"])
    else:
        texts.extend(_BUILTIN_CORPUS)
    template = PromptTemplate.sft()
    for question, solution, _ in TINY_PROBLEMS:
        texts.append(template.render(question) + solution)
    return texts


@dataclass(frozen=True)
class TinyPolicy:
    """A tiny causal LM, its tokenizer, and (for trained ones) the prompts it was trained on."""

    model: Any
    tokenizer: Any
    #: question -> (rendered SFT prompt, solution, answer)
    problems: dict[str, tuple[str, str, str]]


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny BPE tokenizer *as a model directory loads it*.

    It is saved next to a tiny Qwen2 config and reloaded with ``AutoTokenizer``, because
    transformers 5 resolves the tokenizer class from the model type (``Qwen2Tokenizer``, which
    installs Qwen's digit-splitting pre-tokenizer): the freshly trained object and its reloaded
    copy tokenise differently, and every test that saves and reloads must see the same tokens.
    """
    _torch()
    from transformers import AutoTokenizer

    from rstar_math.models.tiny import build_tiny_model, build_tiny_tokenizer, save_tiny_model

    trained = build_tiny_tokenizer(tiny_corpus(), vocab_size=512)
    path = tmp_path_factory.mktemp("tiny_tokenizer")
    save_tiny_model(build_tiny_model(trained, hidden_size=16, num_layers=1), trained, path)
    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="session")
def tiny_policy(tiny_tokenizer: Any) -> Any:
    """A random (untrained) 2-layer Qwen2, float32, eval mode."""
    _torch()
    from rstar_math.models.tiny import build_tiny_model

    return build_tiny_model(tiny_tokenizer, arch="qwen2", hidden_size=64, num_layers=2, seed=0)


def train_tiny_policy(
    tokenizer: Any,
    texts: list[str],
    *,
    steps: int = 400,
    lr: float = 1e-2,
    seed: int = 0,
    arch: str = "qwen2",
) -> Any:
    """Overfit a tiny causal LM on ``texts`` (each followed by EOS); returns it in eval mode."""
    torch = _torch()
    from rstar_math.models.tiny import build_tiny_model

    model = build_tiny_model(tokenizer, arch=arch, hidden_size=64, num_layers=2, seed=seed)
    seqs = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    torch.manual_seed(seed)
    model.train()
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if loss.item() < 0.02:
            break
    model.eval()
    return model


@pytest.fixture(scope="session")
def tiny_trained_policy(tiny_tokenizer: Any) -> TinyPolicy:
    """A tiny Qwen2 that greedily writes the solutions of :data:`TINY_PROBLEMS` step by step."""
    from rstar_math.format import PromptTemplate

    template = PromptTemplate.sft()
    problems = {q: (template.render(q), s, a) for q, s, a in TINY_PROBLEMS}
    model = train_tiny_policy(tiny_tokenizer, [p + s for p, s, _ in problems.values()])
    return TinyPolicy(model=model, tokenizer=tiny_tokenizer, problems=problems)


@pytest.fixture(scope="session")
def tiny_trained_policy_dir(
    tiny_trained_policy: TinyPolicy, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """:func:`tiny_trained_policy` saved with its tokenizer (``from_pretrained``-loadable)."""
    from rstar_math.models.tiny import save_tiny_model

    path = tmp_path_factory.mktemp("tiny_trained_policy")
    return save_tiny_model(tiny_trained_policy.model, tiny_trained_policy.tokenizer, path)
