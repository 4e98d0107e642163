"""Process preference model training with the pairwise Bradley-Terry loss.

Each :class:`~rstar_math.training.records.PreferencePair` is one tree node: a shared prefix and
lists of positive and negative continuations. Its loss is

    mean over (p, n) in pos x neg of  -log sigmoid(r(prefix + p) - r(prefix + n))

on the PPM's raw rewards ``r``; a micro-batch's loss is the mean over its nodes (normalised over
the whole optimizer step under gradient accumulation). Every distinct text of a micro-batch is
encoded and run through the model once, then the combinations index into the rewards.

Texts are built with :func:`rstar_math.scorers.ppm.ppm_input` and tokenised with
:func:`~rstar_math.scorers.ppm.ppm_encode`, exactly as :class:`~rstar_math.scorers.ppm.PPMScorer`
does at inference. Held-out pair accuracy is measured on the values a ``PPMScorer`` over the model
returns (``eval_batch_size`` texts per forward), so
``PPMScorer.from_pretrained(checkpoint, batch_size=eval_batch_size)`` reproduces it exactly; a tie
(equal values, e.g. both saturated at 1.0: mind ``scale``) counts as half right, so an untrained
PPM (zero head: every value 0) scores 50%. The held-out loss is computed on the raw rewards.

Checkpoints (``output_dir/checkpoint-XXXXXX``) are :meth:`PPMModel.save_pretrained` directories,
loadable by ``PPMScorer.from_pretrained``, with ``trainer_state.pt`` (optimizer, scheduler, step,
RNG, histories) beside the weights; a run resumes from the latest one. The final PPM goes to
``output_dir/final``. The checkpoint records the prompt template and ``max_length`` so the scorer
renders and truncates texts as the trainer did.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rstar_math._deps import require
from rstar_math.format import Prompter, PromptTemplate

from . import _loop
from .config import PPMTrainingConfig, load_config
from .records import PreferencePair, import_reference_pairs, read_pairs

torch = require("torch", "train")
transformers = require("transformers", "train")

from rstar_math.scorers.ppm import (  # noqa: E402
    PPMInput,
    PPMModel,
    PPMScorer,
    ppm_encode,
    ppm_input,
)

__all__ = [
    "PPMTrainingConfig",
    "PPMTrainingResult",
    "bradley_terry_loss",
    "evaluate_pairs",
    "load_ppm_for_training",
    "train_ppm",
    "train_ppm_from_files",
]

logger = logging.getLogger(__name__)


@dataclass
class PPMTrainingResult:
    """What :func:`train_ppm` did: the final PPM directory and the accuracy history."""

    output_dir: Path
    model_dir: Path
    global_step: int
    #: held-out evaluations: ``{"step", "accuracy", "loss", "ties", "combos"}``
    eval_history: list[dict[str, float]] = field(default_factory=list)
    #: ``{"step", "loss", "lr"}`` per optimizer step
    train_history: list[dict[str, float]] = field(default_factory=list)
    model: Any = None
    tokenizer: Any = None

    @property
    def accuracy_history(self) -> list[tuple[int, float]]:
        return [(int(e["step"]), e["accuracy"]) for e in self.eval_history]

    @property
    def initial_accuracy(self) -> float | None:
        return self.eval_history[0]["accuracy"] if self.eval_history else None

    @property
    def final_accuracy(self) -> float | None:
        return self.eval_history[-1]["accuracy"] if self.eval_history else None


# --------------------------------------------------------------------------- batching


@dataclass
class _PairBatch:
    inputs: list[PPMInput]  # distinct texts of the batch
    pos_idx: Any  # (C,) index into texts, one per combination
    neg_idx: Any  # (C,)
    node_idx: Any  # (C,) which pair (node) each combination belongs to
    combos_per_node: Any  # (P,)


def _pair_inputs(pair: PreferencePair, prompt: Prompter) -> tuple[list[PPMInput], list[PPMInput]]:
    prefix = list(pair.prefix_steps)
    pos = [ppm_input(prompt, pair.question, [*prefix, c]) for c in pair.pos]
    neg = [ppm_input(prompt, pair.question, [*prefix, c]) for c in pair.neg]
    return pos, neg


def _build_batch(pairs: Sequence[PreferencePair], prompt: Prompter) -> _PairBatch:
    index: dict[PPMInput, int] = {}
    pos_idx: list[int] = []
    neg_idx: list[int] = []
    node_idx: list[int] = []
    counts: list[int] = []

    def ix(text: PPMInput) -> int:
        if text not in index:
            index[text] = len(index)
        return index[text]

    for k, pair in enumerate(pairs):
        pos, neg = _pair_inputs(pair, prompt)
        pi = [ix(t) for t in pos]
        ni = [ix(t) for t in neg]
        for p in pi:
            for n in ni:
                pos_idx.append(p)
                neg_idx.append(n)
                node_idx.append(k)
        counts.append(len(pi) * len(ni))
    return _PairBatch(
        inputs=list(index),
        pos_idx=torch.tensor(pos_idx, dtype=torch.long),
        neg_idx=torch.tensor(neg_idx, dtype=torch.long),
        node_idx=torch.tensor(node_idx, dtype=torch.long),
        combos_per_node=torch.tensor(counts, dtype=torch.float32),
    )


def bradley_terry_loss(
    rewards: Any, pos_idx: Any, neg_idx: Any, node_idx: Any, combos_per_node: Any
) -> Any:
    """Per-node mean of ``-log sigmoid(r_pos - r_neg)`` over its combinations; shape ``(P,)``."""
    dev = rewards.device
    per_combo = -torch.nn.functional.logsigmoid(rewards[pos_idx.to(dev)] - rewards[neg_idx.to(dev)])
    per_node = torch.zeros(combos_per_node.shape[0], dtype=per_combo.dtype, device=dev)
    per_node = per_node.index_add(0, node_idx.to(dev), per_combo)
    return per_node / combos_per_node.to(dev)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def _score_inputs(
    model: PPMModel,
    tokenizer: Any,
    inputs: Sequence[PPMInput],
    batch_size: int,
    max_length: int | None,
) -> dict[PPMInput, float]:
    """Raw rewards per distinct input (longest first, ``batch_size`` per forward)."""
    unique = list(dict.fromkeys(inputs))
    lengths = [len(ids) for ids in tokenizer([u.text for u in unique])["input_ids"]]
    order = sorted(range(len(unique)), key=lambda i: -lengths[i])
    rewards: dict[PPMInput, float] = {}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            batch = [unique[i] for i in order[start : start + batch_size]]
            enc = _encode(model, tokenizer, batch, max_length, model.device)
            out = model(enc["input_ids"], enc["attention_mask"], enc.get("evidence_mask"))
            for item, r in zip(batch, out.rewards.tolist(), strict=True):
                rewards[item] = float(r)
    finally:
        model.train(was_training)
    return rewards


def _encode(
    model: PPMModel,
    tokenizer: Any,
    inputs: Sequence[PPMInput],
    max_length: int | None,
    device: Any,
) -> dict[str, Any]:
    return ppm_encode(
        tokenizer, inputs, max_length=max_length, device=device, evidence=bool(model.evidence)
    )


def evaluate_pairs(
    model: PPMModel,
    pairs: Iterable[PreferencePair],
    *,
    tokenizer: Any | None = None,
    prompt: Prompter | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
) -> dict[str, float]:
    """Held-out pair accuracy (values; a tie counts half) and Bradley-Terry loss (rewards).

    Returns ``{"accuracy", "strict_accuracy", "loss", "ties", "combos", "pairs"}``; accuracy is
    over all ``pos x neg`` combinations of all pairs, loss the mean of the per-node losses.
    """
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    prompt = prompt or model.ppm_config.prompt() or PromptTemplate.sft()
    if max_length is None:
        max_length = model.ppm_config.max_length
    pairs = list(pairs)
    if not pairs:
        return {"accuracy": float("nan"), "strict_accuracy": float("nan"), "loss": float("nan"),
                "ties": 0.0, "combos": 0.0, "pairs": 0.0}  # fmt: skip
    texts = [_pair_inputs(p, prompt) for p in pairs]
    flat = [t for pos, neg in texts for t in (*pos, *neg)]
    rewards = _score_inputs(model, tokenizer, flat, batch_size, max_length)
    # accuracy from the inference path itself, so a saved checkpoint scored by PPMScorer
    # reproduces it exactly
    scorer = PPMScorer(
        model, tokenizer=tokenizer, prompt=prompt, batch_size=batch_size, max_length=max_length
    )
    values = dict(zip(flat, scorer.score_inputs(flat), strict=True))
    wins = ties = combos = 0
    loss_total = 0.0
    for pos, neg in texts:
        node_loss = 0.0
        for p in pos:
            for n in neg:
                combos += 1
                if values[p] > values[n]:
                    wins += 1
                elif values[p] == values[n]:
                    ties += 1
                diff = torch.tensor(rewards[p] - rewards[n], dtype=torch.float64)
                node_loss += float(-torch.nn.functional.logsigmoid(diff))
        loss_total += node_loss / (len(pos) * len(neg))
    return {
        "accuracy": (wins + 0.5 * ties) / combos,
        "strict_accuracy": wins / combos,
        "loss": loss_total / len(pairs),
        "ties": float(ties),
        "combos": float(combos),
        "pairs": float(len(pairs)),
    }


# --------------------------------------------------------------------------- model loading


def load_ppm_for_training(
    model_or_path: Any,
    tokenizer: Any | None = None,
    scale: float = 1.0,
    head_init_std: float = 0.0,
    evidence: Sequence[str] = (),
    evidence_init: float = 1.0,
) -> PPMModel:
    """A :class:`PPMModel` from a PPM, a PPM directory, a policy directory or a causal LM.

    ``evidence`` / ``evidence_init`` apply when a new PPM is built from a policy; an existing PPM
    keeps its own features, and asking for different ones is refused rather than ignored.
    """
    evidence = tuple(evidence)
    if isinstance(model_or_path, PPMModel):
        ppm = model_or_path
        if tokenizer is not None:
            ppm.tokenizer = tokenizer
        return _check_evidence(ppm, evidence)
    if isinstance(model_or_path, (str, os.PathLike)):
        from rstar_math.scorers.ppm import PPM_CONFIG_NAME

        path = Path(model_or_path)
        if (path / PPM_CONFIG_NAME).is_file():
            ppm = PPMModel.from_pretrained(path, tokenizer=tokenizer, dtype=torch.float32)
            return _check_evidence(ppm, evidence)
    return PPMModel.from_policy(
        model_or_path,
        tokenizer=tokenizer,
        scale=scale,
        head_init_std=head_init_std,
        evidence=evidence,
        evidence_init=evidence_init,
    )


def _check_evidence(ppm: PPMModel, evidence: tuple[str, ...]) -> PPMModel:
    if evidence and evidence != ppm.evidence:
        raise ValueError(
            f"the PPM to train already has evidence features {ppm.evidence}; the config asks for "
            f"{evidence} (features are chosen when a PPM is built from a policy)"
        )
    return ppm


# --------------------------------------------------------------------------- training


def train_ppm(
    model_or_path: Any,
    pairs: Iterable[PreferencePair],
    config: PPMTrainingConfig | dict[str, Any] | None = None,
    eval_pairs: Iterable[PreferencePair] | None = None,
    *,
    tokenizer: Any | None = None,
    prompt: Prompter | None = None,
) -> PPMTrainingResult:
    """Train a PPM on node-level preference pairs; see the module docstring.

    ``model_or_path``: a :class:`PPMModel`, a PPM checkpoint directory, a policy directory or a
    ``transformers`` causal LM (then a fresh value head is put on its body, with
    ``config.scale``). ``tokenizer`` defaults to the model's / directory's. ``prompt`` defaults to
    ``PromptTemplate.sft()`` and is recorded in the checkpoint.
    """
    cfg = load_config(PPMTrainingConfig, config)
    out_dir = Path(cfg.output_dir)
    device = _loop.resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    resume_dir = _loop.latest_checkpoint(out_dir) if cfg.resume else None
    if resume_dir is not None:
        logger.info("resuming PPM training from %s", resume_dir)
        model = PPMModel.from_pretrained(resume_dir, dtype=torch.float32)
        if tokenizer is not None:
            model.tokenizer = tokenizer
    else:
        model = load_ppm_for_training(
            model_or_path,
            tokenizer,
            cfg.scale,
            cfg.head_init_std,
            cfg.evidence,
            cfg.evidence_init,
        )
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError("the PPM has no tokenizer; pass tokenizer=")
    prompt = prompt or model.ppm_config.prompt() or PromptTemplate.sft()
    model.ppm_config = replace(model.ppm_config, max_length=cfg.max_length)
    model.to(device)
    if cfg.gradient_checkpointing:
        model.model.gradient_checkpointing_enable()

    train_pairs = list(pairs)
    if eval_pairs is None and cfg.eval_fraction > 0:
        train_idx, eval_idx = _loop.split_eval(len(train_pairs), cfg.eval_fraction, cfg.seed)
        eval_list = [train_pairs[i] for i in eval_idx]
        train_pairs = [train_pairs[i] for i in train_idx]
    else:
        eval_list = list(eval_pairs) if eval_pairs is not None else []
    if not train_pairs:
        raise ValueError("no PPM training pairs")

    plan = _loop.BatchPlan(len(train_pairs), cfg.batch_size, cfg.grad_accum_steps, cfg.seed)
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
        if eval_list and not (eval_history and eval_history[-1]["step"] == step):
            res = evaluate_pairs(
                model,
                eval_list,
                tokenizer=tokenizer,
                prompt=prompt,
                batch_size=cfg.eval_batch_size,
                max_length=cfg.max_length,
            )
            eval_history.append({"step": step, **res})
            logger.info(
                "step %d: held-out pair accuracy %.4f (loss %.4f, %d combos)",
                step,
                res["accuracy"],
                res["loss"],
                res["combos"],
            )

    def save_model(path: Path) -> None:
        model.save_pretrained(path, tokenizer=tokenizer, prompt=prompt)

    def summary() -> dict[str, Any]:
        return {
            "step": step,
            "total_steps": total_steps,
            "config": cfg.to_dict(),
            "eval_history": eval_history,
            "num_train_pairs": len(train_pairs),
            "num_eval_pairs": len(eval_list),
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
    autocast: Any = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if cfg.bf16
        else contextlib.nullcontext()
    )
    tqdm = require("tqdm.auto", "train").tqdm
    bar = tqdm(
        total=total_steps, initial=step, desc="ppm", disable=not cfg.progress, dynamic_ncols=True
    )
    try:
        while step < total_steps:
            group = [[train_pairs[i] for i in mb] for mb in plan.step_group(step)]
            n_nodes = sum(len(mb) for mb in group)
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for mb in group:
                batch = _build_batch(mb, prompt)
                enc = _encode(model, tokenizer, batch.inputs, cfg.max_length, device)
                with autocast:
                    out = model(enc["input_ids"], enc["attention_mask"], enc.get("evidence_mask"))
                per_node = bradley_terry_loss(
                    out.rewards.float(),
                    batch.pos_idx,
                    batch.neg_idx,
                    batch.node_idx,
                    batch.combos_per_node,
                )
                loss_sum = per_node.sum()
                (loss_sum / n_nodes).backward()
                total += float(loss_sum.detach().item())
            if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            step += 1
            train_loss = total / n_nodes
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
    return PPMTrainingResult(
        output_dir=out_dir,
        model_dir=model_dir,
        global_step=step,
        eval_history=eval_history,
        train_history=train_history,
        model=model,
        tokenizer=tokenizer,
    )


def _read_pair_files(
    paths: Sequence[str | os.PathLike[str]], reference_format: bool
) -> list[PreferencePair]:
    out: list[PreferencePair] = []
    for p in paths:
        out.extend(import_reference_pairs(p) if reference_format else read_pairs(p))
    return out


def train_ppm_from_files(
    pairs_jsonl: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    config: PPMTrainingConfig | dict[str, Any] | str | os.PathLike[str] | None = None,
    eval_jsonl: str | os.PathLike[str] | None = None,
    *,
    reference_format: bool = False,
    **overrides: Any,
) -> PPMTrainingResult:
    """CLI entry: train a PPM from pair JSONL file(s) starting at ``model`` (policy or PPM dir).

    ``config``: a config object, dict, or YAML/JSON file; ``overrides`` and ``out_dir`` win.
    ``reference_format``: the files are the reference's ``{prompt, pos, neg}`` records.
    """
    cfg = load_config(PPMTrainingConfig, config, output_dir=out_dir, **overrides)
    paths = [pairs_jsonl] if isinstance(pairs_jsonl, (str, os.PathLike)) else list(pairs_jsonl)
    train = _read_pair_files(paths, reference_format)
    evals = _read_pair_files([eval_jsonl], reference_format) if eval_jsonl is not None else None
    return train_ppm(model, train, cfg, evals)
