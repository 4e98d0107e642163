"""Policy supervised fine-tuning on :class:`~rstar_math.training.records.SFTRecord` data.

Each example is ``prompt.render(question)`` followed by the record's ``response`` and the EOS
token. Prompt and response are tokenised separately (so the prompt's tokens are exactly those
the policy sees at generation time and the loss boundary is exact); every prompt position has
label ``-100`` and carries no loss. The step markers of the format are added to the tokenizer as
special tokens when they are not single tokens already, and the embeddings resized.

``packing=True`` packs whole examples into blocks of ``max_length`` tokens; position ids restart at
every example and no 2-d attention mask is passed, which makes ``transformers`` (>= 4.53) build a
block-diagonal causal mask, so packed examples do not attend to each other.

The loop is plain torch: gradient accumulation (loss normalised by the number of response tokens
of the whole optimizer step), warm-up + linear/cosine schedule, gradient clipping, periodic
held-out loss, atomic checkpoints ``checkpoint-XXXXXX`` holding model, tokenizer, optimizer,
scheduler, step and RNG state, resumed automatically from the latest one; the final policy is
saved to ``output_dir/final`` (``AutoModelForCausalLM.from_pretrained`` loads it).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rstar_math._deps import require
from rstar_math.format import SPECIAL_MARKERS, Prompter, PromptTemplate

from . import _loop
from .config import SFTTrainingConfig, load_config
from .records import SFTRecord, import_reference_sft, read_sft_records

torch = require("torch", "train")
transformers = require("transformers", "train")

__all__ = [
    "SFTTrainingConfig",
    "SFTTrainingResult",
    "add_step_markers",
    "encode_sft_example",
    "pack_examples",
    "sft_loss_sum",
    "train_sft",
    "train_sft_from_files",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass
class SFTTrainingResult:
    """What :func:`train_sft` did: the final policy directory and the loss history."""

    output_dir: Path
    model_dir: Path
    global_step: int
    #: held-out evaluations: ``{"step", "loss", "tokens"}``
    eval_history: list[dict[str, float]] = field(default_factory=list)
    #: ``{"step", "loss", "lr"}`` per optimizer step
    train_history: list[dict[str, float]] = field(default_factory=list)
    model: Any = None
    tokenizer: Any = None

    @property
    def initial_eval_loss(self) -> float | None:
        return self.eval_history[0]["loss"] if self.eval_history else None

    @property
    def final_eval_loss(self) -> float | None:
        return self.eval_history[-1]["loss"] if self.eval_history else None


# --------------------------------------------------------------------------- tokenizer / data


def add_step_markers(
    tokenizer: Any, model: Any | None = None, markers: Sequence[str] = SPECIAL_MARKERS
) -> list[str]:
    """Add every marker that is not a single token as a special token; resize ``model``.

    Returns the markers added (empty when the tokenizer already had them all).
    """
    missing = [m for m in markers if len(tokenizer.encode(m, add_special_tokens=False)) != 1]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
        logger.info("added %d step markers to the tokenizer: %s", len(missing), missing)
    if model is not None:
        emb = model.get_input_embeddings()
        if emb.weight.shape[0] < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
    return missing


def _ensure_pad(tokenizer: Any) -> None:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; SFT needs one to end the responses")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def encode_sft_example(
    tokenizer: Any, prompt: str, response: str, max_length: int, train_on_prompt: bool = False
) -> dict[str, list[int]] | None:
    """Token ids and labels of one example: ``-100`` on the prompt, response + EOS learned.

    ``train_on_prompt`` learns the prompt's tokens too (all but the first, which nothing
    predicts): for a model trained from scratch, which unlike a pretrained one has never
    modelled the questions' language.

    Returns None when the prompt alone leaves no room for a response token. Long responses are
    cut at ``max_length`` (EOS then falls off).
    """
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    response_ids.append(tokenizer.eos_token_id)
    if len(prompt_ids) >= max_length:
        return None
    ids = (prompt_ids + response_ids)[:max_length]
    if train_on_prompt:
        labels = [IGNORE_INDEX, *ids[1:]]
    else:
        labels = [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids) :]
    return {"input_ids": ids, "labels": labels, "prompt_len": [len(prompt_ids)]}


def pack_examples(
    examples: Sequence[dict[str, list[int]]], block_size: int, pad_id: int
) -> list[dict[str, list[int]]]:
    """Pack whole examples greedily (in order) into blocks of exactly ``block_size`` tokens.

    Each block carries ``position_ids`` restarting at every example (and for the padding tail),
    and labels with the first token of every example masked, so no example learns from another.
    """
    blocks: list[dict[str, list[int]]] = []
    cur_ids: list[int] = []
    cur_labels: list[int] = []
    cur_pos: list[int] = []

    def flush() -> None:
        if not cur_ids:
            return
        pad = block_size - len(cur_ids)
        blocks.append(
            {
                "input_ids": cur_ids + [pad_id] * pad,
                "labels": cur_labels + [IGNORE_INDEX] * pad,
                "position_ids": cur_pos + list(range(pad)),
            }
        )

    for ex in examples:
        ids, labels = ex["input_ids"], list(ex["labels"])
        if len(ids) > block_size:
            ids, labels = ids[:block_size], labels[:block_size]
        if len(cur_ids) + len(ids) > block_size:
            flush()
            cur_ids, cur_labels, cur_pos = [], [], []
        labels[0] = IGNORE_INDEX
        cur_ids = cur_ids + list(ids)
        cur_labels = cur_labels + labels
        cur_pos = cur_pos + list(range(len(ids)))
    flush()
    return blocks


def _collate(items: Sequence[dict[str, list[int]]], pad_id: int, device: Any) -> dict[str, Any]:
    if "position_ids" in items[0]:  # packed blocks: all the same length, no attention mask
        return {
            "input_ids": torch.tensor([it["input_ids"] for it in items], device=device),
            "labels": torch.tensor([it["labels"] for it in items], device=device),
            "position_ids": torch.tensor([it["position_ids"] for it in items], device=device),
        }
    width = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, it in enumerate(items):
        n = len(it["input_ids"])
        ids[i, :n] = torch.tensor(it["input_ids"])
        labels[i, :n] = torch.tensor(it["labels"])
        mask[i, :n] = 1
    return {
        "input_ids": ids.to(device),
        "labels": labels.to(device),
        "attention_mask": mask.to(device),
    }


def _num_targets(items: Sequence[dict[str, list[int]]]) -> int:
    """Tokens that carry loss: label != -100 at positions 1.. (position 0 predicts nothing)."""
    return sum(sum(1 for x in it["labels"][1:] if x != IGNORE_INDEX) for it in items)


def sft_loss_sum(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """Summed next-token cross-entropy over the labelled tokens of ``batch``, and their count.

    ``labels`` are aligned with ``input_ids`` (``-100``: no loss); the logits at position ``t``
    are scored against ``labels[t + 1]``.
    """
    kwargs = {"input_ids": batch["input_ids"], "use_cache": False}
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"]
    else:
        kwargs["attention_mask"] = batch["attention_mask"]
    logits = model(**kwargs).logits
    labels = batch["labels"][:, 1:]
    logits = logits[:, :-1, :]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, int((labels != IGNORE_INDEX).sum().item())


# --------------------------------------------------------------------------- training


def _load_policy(model_or_path: Any, tokenizer: Any | None) -> tuple[Any, Any]:
    if isinstance(model_or_path, (str, os.PathLike)):
        from rstar_math.generators.hf import check_pretrained_path, load_pretrained

        path = check_pretrained_path(model_or_path, "policy")
        model = load_pretrained(transformers.AutoModelForCausalLM, path, "policy")
        tok = tokenizer or load_pretrained(transformers.AutoTokenizer, path, "tokenizer")
        return model, tok
    if tokenizer is None:
        raise ValueError("pass the tokenizer when train_sft gets a model object")
    return model_or_path, tokenizer


def _encode_all(
    records: Iterable[SFTRecord],
    tokenizer: Any,
    prompt: Prompter,
    max_length: int,
    train_on_prompt: bool = False,
) -> tuple[list[dict[str, list[int]]], int]:
    out, skipped = [], 0
    for rec in records:
        ex = encode_sft_example(
            tokenizer, prompt.render(rec.question), rec.response, max_length, train_on_prompt
        )
        if ex is None:
            skipped += 1
        else:
            out.append(ex)
    return out, skipped


@torch.no_grad()
def evaluate_sft_loss(
    model: Any, examples: Sequence[dict[str, list[int]]], pad_id: int, batch_size: int, device: Any
) -> dict[str, float]:
    """Mean per-token loss of ``examples`` (encoded, unpacked) under ``model``."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for i in range(0, len(examples), batch_size):
        loss, n = sft_loss_sum(model, _collate(examples[i : i + batch_size], pad_id, device))
        total += float(loss.item())
        tokens += n
    model.train(was_training)
    return {"loss": total / max(1, tokens), "tokens": float(tokens)}


def train_sft(
    model_or_path: Any,
    records: Iterable[SFTRecord],
    config: SFTTrainingConfig | dict[str, Any] | None = None,
    eval_records: Iterable[SFTRecord] | None = None,
    *,
    tokenizer: Any | None = None,
    prompt: Prompter | None = None,
) -> SFTTrainingResult:
    """Fine-tune a causal LM policy on SFT records; see the module docstring.

    ``model_or_path``: a ``transformers`` causal LM (then pass ``tokenizer``) or a directory. When
    ``config.resume`` and ``output_dir`` holds a checkpoint, training continues from it (model,
    tokenizer, optimizer, scheduler, step, RNG) with the same data order.
    """
    cfg = load_config(SFTTrainingConfig, config)
    prompt = prompt or PromptTemplate.sft()
    out_dir = Path(cfg.output_dir)
    device = _loop.resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    resume_dir = _loop.latest_checkpoint(out_dir) if cfg.resume else None
    if resume_dir is not None:
        logger.info("resuming SFT from %s", resume_dir)
        if isinstance(model_or_path, (str, os.PathLike)):
            model_cls: Any = transformers.AutoModelForCausalLM
        else:
            model_cls = type(model_or_path)
        model = model_cls.from_pretrained(str(resume_dir))
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(resume_dir))
    else:
        model, tokenizer = _load_policy(model_or_path, tokenizer)
    _ensure_pad(tokenizer)
    if cfg.add_special_markers:
        add_step_markers(tokenizer, model)
    else:
        missing = [
            m for m in SPECIAL_MARKERS if len(tokenizer.encode(m, add_special_tokens=False)) != 1
        ]
        if missing:
            logger.warning(
                "add_special_markers=False and the tokenizer has no single token for %s: the "
                "policy learns them as several tokens each, which works but costs tokens and "
                "makes stops less reliable; leave add_special_markers=True to add them",
                ", ".join(missing),
            )
    model.to(device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()

    all_records = list(records)
    if eval_records is None and cfg.eval_fraction > 0:
        train_idx, eval_idx = _loop.split_eval(len(all_records), cfg.eval_fraction, cfg.seed)
        eval_list = [all_records[i] for i in eval_idx]
        all_records = [all_records[i] for i in train_idx]
    else:
        eval_list = list(eval_records) if eval_records is not None else []

    train_ex, skipped = _encode_all(
        all_records, tokenizer, prompt, cfg.max_length, cfg.train_on_prompt
    )
    eval_ex, eval_skipped = _encode_all(eval_list, tokenizer, prompt, cfg.max_length)
    if skipped or eval_skipped:
        logger.warning(
            "skipped %d training / %d eval records whose prompt fills max_length=%d",
            skipped,
            eval_skipped,
            cfg.max_length,
        )
    if not train_ex:
        raise ValueError("no usable SFT training records")
    pad_id = tokenizer.pad_token_id
    items = pack_examples(train_ex, cfg.max_length, pad_id) if cfg.packing else train_ex
    lengths = None
    if cfg.group_by_length and not cfg.packing:
        lengths = [len(item["input_ids"]) for item in items]
    plan = _loop.BatchPlan(
        len(items), cfg.batch_size, cfg.grad_accum_steps, cfg.seed, lengths=lengths
    )
    total_steps = plan.total_steps(cfg.num_epochs, cfg.max_steps)

    optimizer = _loop.build_optimizer(model, cfg.learning_rate, cfg.weight_decay)
    scheduler = _loop.build_scheduler(
        optimizer, cfg.lr_scheduler, _loop.warmup_from(cfg, total_steps), total_steps
    )
    step = 0
    eval_history: list[dict[str, float]] = []
    train_history: list[dict[str, float]] = []
    if resume_dir is not None:
        state = _loop.load_trainer_state(resume_dir)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        eval_history = list(state.get("eval_history", []))
        train_history = list(state.get("train_history", []))
        _loop.set_rng_state(state["rng"])

    def run_eval() -> None:
        if eval_ex and not (eval_history and eval_history[-1]["step"] == step):
            res = evaluate_sft_loss(model, eval_ex, pad_id, cfg.eval_batch_size, device)
            eval_history.append({"step": step, **res})
            logger.info("step %d: held-out loss %.4f", step, res["loss"])

    def save_model(path: Path) -> None:
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)

    def summary() -> dict[str, Any]:
        return {
            "step": step,
            "total_steps": total_steps,
            "config": cfg.to_dict(),
            "eval_history": eval_history,
            "num_train_items": len(items),
            "num_eval_records": len(eval_ex),
        }

    def checkpoint() -> None:
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "rng": _loop.get_rng_state(),
            "eval_history": eval_history,
            "train_history": train_history,
        }
        path = _loop.save_checkpoint(
            out_dir, step, save_model, state, summary(), cfg.save_total_limit
        )
        logger.info("saved checkpoint %s", path)

    model.train()
    run_eval()
    autocast = _autocast(device, cfg.bf16)
    tqdm = require("tqdm.auto", "train").tqdm
    bar = tqdm(
        total=total_steps, initial=step, desc="sft", disable=not cfg.progress, dynamic_ncols=True
    )
    try:
        while step < total_steps:
            group = [[items[i] for i in mb] for mb in plan.step_group(step)]
            n_targets = max(1, sum(_num_targets(mb) for mb in group))
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for mb in group:
                batch = _collate(mb, pad_id, device)
                with autocast:
                    loss_sum, _ = sft_loss_sum(model, batch)
                (loss_sum / n_targets).backward()
                total += float(loss_sum.detach().item())
            if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            step += 1
            train_loss = total / n_targets
            train_history.append({"step": step, "loss": train_loss, "lr": lr})
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}")
            if cfg.log_every and step % cfg.log_every == 0:
                logger.info("step %d/%d: loss %.4f lr %.3g", step, total_steps, train_loss, lr)
            if cfg.eval_every and step % cfg.eval_every == 0:
                run_eval()
            if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                checkpoint()
    finally:
        bar.close()
    run_eval()
    checkpoint()
    model.eval()
    model_dir = _loop.save_final(out_dir, save_model, summary())
    return SFTTrainingResult(
        output_dir=out_dir,
        model_dir=model_dir,
        global_step=step,
        eval_history=eval_history,
        train_history=train_history,
        model=model,
        tokenizer=tokenizer,
    )


def _autocast(device: Any, bf16: bool) -> Any:
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_sft_from_files(
    records_jsonl: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    config: SFTTrainingConfig | dict[str, Any] | str | os.PathLike[str] | None = None,
    eval_jsonl: str | os.PathLike[str] | None = None,
    *,
    reference_format: bool = False,
    **overrides: Any,
) -> SFTTrainingResult:
    """CLI entry: train a policy from SFT JSONL file(s) (a model directory in, ``out_dir`` out).

    ``config``: a config object, dict, or YAML/JSON file; ``overrides`` and ``out_dir`` win.
    ``reference_format``: the files are the reference's ``{query, response}`` records.
    """
    cfg = load_config(SFTTrainingConfig, config, output_dir=out_dir, **overrides)
    paths = [records_jsonl] if isinstance(records_jsonl, (str, os.PathLike)) else records_jsonl
    reader = import_reference_sft if reference_format else read_sft_records
    records = [r for p in paths for r in reader(p)]
    eval_records = list(reader(eval_jsonl)) if eval_jsonl is not None else None
    return train_sft(model, records, cfg, eval_records)
