"""Tiny causal LMs built from a config and a tokenizer trained on the fly.

No weights or tokenizers are ever downloaded: tests, examples and the built-in miniature model
train a byte-level BPE tokenizer on a small corpus (the step markers of the code-augmented CoT
format as special tokens) and build a few-layer Qwen2 or Llama model from a config. The result is
a real ``transformers`` model directory that every backend (HF, vLLM, the PPM) loads like any
other checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rstar_math._deps import require

__all__ = ["build_tiny_model", "build_tiny_tokenizer", "save_tiny_model"]

BOS = "<|bos|>"
EOS = "<|endoftext|>"
PAD = "<|pad|>"
_QWEN2_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def build_tiny_tokenizer(
    corpus: Iterable[str],
    vocab_size: int = 512,
    special_tokens: Sequence[str] | None = None,
) -> Any:
    """Train a byte-level BPE tokenizer on ``corpus`` and wrap it for ``transformers``.

    The format's markers (``<end_of_step>`` ...) are added as special tokens so each is one id and
    generation can stop on it exactly. Byte-level means any text, even unseen characters, encodes.
    """
    tokenizers = require("tokenizers", "hf")
    transformers = require("transformers", "hf")
    from rstar_math.format import SPECIAL_MARKERS

    specials = [PAD, BOS, EOS, *(special_tokens if special_tokens is not None else SPECIAL_MARKERS)]
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    # Qwen2's own pre-tokenizer (digits split one by one): transformers re-applies it when a saved
    # Qwen2 checkpoint's tokenizer is loaded, so training with any other one would change the
    # token ids between the in-memory and the reloaded tokenizer.
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
        [
            tokenizers.pre_tokenizers.Split(
                tokenizers.Regex(_QWEN2_PRETOKENIZE), behavior="isolated", invert=False
            ),
            tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=specials[3:],
    )
    fast.padding_side = "left"
    return fast


def build_tiny_model(
    tokenizer: Any,
    arch: str = "qwen2",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 2048,
    seed: int = 0,
) -> Any:
    """A randomly initialised Qwen2 or Llama causal LM sized for CPU tests."""
    torch = require("torch", "hf")
    transformers = require("transformers", "hf")
    common: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size or 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": max_position_embeddings,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": True,
    }
    if arch == "qwen2":
        config = transformers.Qwen2Config(**common)
        model_cls = transformers.Qwen2ForCausalLM
    elif arch == "llama":
        config = transformers.LlamaConfig(**common)
        model_cls = transformers.LlamaForCausalLM
    else:
        raise ValueError(f"arch must be 'qwen2' or 'llama', got {arch!r}")
    torch.manual_seed(seed)
    model = model_cls(config)
    model.eval()
    return model


def save_tiny_model(model: Any, tokenizer: Any, path: str | Path) -> Path:
    """Save model and tokenizer as one ``from_pretrained``-loadable directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
