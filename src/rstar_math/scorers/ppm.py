"""The process preference model (PPM): a causal-LM backbone with a scalar value head.

Model
    :class:`PPMModel` is the policy's transformer body (the base model, no LM head) plus a value
    head ``Linear(hidden, 1, bias=False)`` reading the final hidden state of the last
    non-padding token (found from the attention mask, so left and right padding give the same
    result; position ids are derived from the mask for the same reason). It returns the raw head
    output ``rewards`` and the squashed ``values``.

Why the head has no bias
    The PPM is trained with the pairwise Bradley-Terry loss ``-log sigmoid(r_pos - r_neg)``, which
    is invariant to adding a constant to every reward: a bias would get exactly zero gradient and
    stay wherever it was initialised, silently shifting every squashed value. Without it, a
    freshly initialised (zero) head scores everything 0, the neutral value. It is also the layout
    of ``transformers``' ``*ForSequenceClassification`` (``score = Linear(hidden, num_labels,
    bias=False)``), so a saved PPM directory loads with ``AutoModelForSequenceClassification``
    (and vLLM's pooling/classify runners) as well as with :meth:`PPMModel.from_pretrained`; those
    return the raw reward, squash it with :func:`squash_reward`.

Squashing, defined once
    ``value = tanh(reward / scale)`` (:func:`squash_reward`, :meth:`PPMModel.squash`), with
    ``scale`` stored in the checkpoint's ``ppm_config.json`` (default 5.0, the reference's). The
    reference trains on
    raw rewards and applies ``tanh(r / 5)`` only at inference, so nothing in its checkpoint says how
    its values were meant to be read; here the scale travels with the weights, ``forward`` always
    returns both, the trainer's loss uses ``rewards`` and its accuracy ``values``, and the scorer
    returns ``values``. ``tanh`` is strictly increasing, so the ordering (what the Bradley-Terry
    loss learns) is the same in both; ``scale`` only sets how many reward units map to the saturated
    ends of [-1, 1] (the MCTS mixes these values with +-1 terminal rewards, so a scale matched to
    the learnt reward spread keeps intermediate steps from all looking certain).

Text and tokens, defined once
    :func:`ppm_text` builds the scored text ``prompt.render(question) + "".join(steps)`` and
    :func:`ppm_encode` tokenises texts without cross-text effects (each text alone, then padded);
    the scorer and the trainer both go through them, so training and inference see the same
    tokens.

Token evidence (optional, off by default)
    The paper's PPM reads one hidden state, at the last token. What a judge most needs to know
    about a step is often how unlikely its own tokens are (a name or number miscopied from the
    question is one very unlikely token for a model that copies reliably), and that is not in the
    state a value head reads: it depends on the token actually written. A PPM built with
    ``evidence`` (names from :data:`EVIDENCE_FEATURES`) keeps its backbone's LM head and adds
    ``Linear(len(evidence), 1, bias=False)`` over the minimum / mean log-probability (nats) of
    the last step's own tokens (``min_logprob``, ``mean_logprob``) or of every step's
    (``solution_min_logprob``, ``solution_mean_logprob``) to the value head's reward; a step's
    own tokens leave out the executor's ``<output>`` block. Sibling steps differ in their last
    step, but the value of a final answer step, which picks the search's answer, has to judge
    the whole solution: the solution features do. Both parts are trained together by the same
    Bradley-Terry loss, which also moves the backbone's log-probabilities (as in implicit
    process reward models). The evidence weights start at ``evidence_init`` (default 1.0), not
    zero: Adam moves a weight by about the learning rate per step, so a zero-initialised weight
    would stay near zero for a whole run at PPM learning rates. Which tokens belong to which step
    is carried by :class:`PPMInput` (the rendered prompt and the steps), so an evidence PPM
    scores requests or :class:`PPMInput` items, not bare texts. Such a checkpoint records
    ``evidence`` in ``ppm_config.json`` (``format_version`` 2, which older readers refuse rather
    than silently ignore) and its extra weights in ``ppm_evidence.safetensors``; a plain
    ``AutoModelForSequenceClassification`` (or vLLM's classify runner) would load only the value
    head part and must not be used for it.

Checkpoint
    One directory: ``config.json`` + ``model.safetensors`` (possibly sharded) in the
    ``*ForSequenceClassification`` layout (``model.*`` backbone weights, ``score.weight`` head),
    the tokenizer files, and ``ppm_config.json`` recording the head, the pooling and the scale
    (plus ``ppm_evidence.safetensors`` for an evidence PPM).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from rstar_math._deps import require
from rstar_math.format import OUTPUT_START, Prompter, PromptTemplate
from rstar_math.generators.hf import check_pretrained_path, load_pretrained
from rstar_math.interfaces import ScoreRequest

torch = require("torch", "hf")
transformers = require("transformers", "hf")
nn = torch.nn

__all__ = [
    "EVIDENCE_FEATURES",
    "PPM_CONFIG_NAME",
    "PPMConfig",
    "PPMInput",
    "PPMModel",
    "PPMOutput",
    "PPMScorer",
    "ppm_encode",
    "ppm_input",
    "ppm_text",
    "squash_reward",
]

logger = logging.getLogger(__name__)

#: File name of the PPM's own settings inside a checkpoint directory.
PPM_CONFIG_NAME = "ppm_config.json"
#: File name of an evidence PPM's extra weights (evidence head, untied LM head).
EVIDENCE_WEIGHTS_NAME = "ppm_evidence.safetensors"
#: The newest ``ppm_config.json`` format this version reads (2: token evidence).
_FORMAT_VERSION = 2
#: Token-level features an evidence PPM can add to its reward (see the module notes): the
#: minimum / mean log-probability of the last step's own tokens, or of every step's.
EVIDENCE_FEATURES = (
    "min_logprob",
    "mean_logprob",
    "solution_min_logprob",
    "solution_mean_logprob",
)
#: evidence_mask values: a token of an earlier step's own text, of the last step's own text
_EARLIER_STEP, _LAST_STEP = 1, 2


# --------------------------------------------------------------------------- text and tokens


@dataclass(frozen=True)
class PPMInput:
    """One text to score, with its step boundaries: the rendered ``prompt`` and the ``steps``.

    The PPM scores ``text == prompt + "".join(steps)``; an evidence PPM also needs to know
    which of its tokens belong to which step. ``PPMInput(text)`` is a bare text (no steps).
    """

    prompt: str
    steps: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.steps, str):
            raise TypeError("steps must be a sequence of step strings, not one str")
        steps = tuple(self.steps)
        for i, step in enumerate(steps):
            if not isinstance(step, str):
                raise TypeError(f"steps[{i}] must be a str, got {type(step).__name__}")
        if not isinstance(self.prompt, str):
            raise TypeError(f"prompt must be a str, got {type(self.prompt).__name__}")
        object.__setattr__(self, "steps", steps)

    @property
    def text(self) -> str:
        return self.prompt + "".join(self.steps)

    @property
    def context(self) -> str:
        """The prompt and every step but the last."""
        return self.prompt + "".join(self.steps[:-1])

    @property
    def step(self) -> str:
        """The last step ("" when there is none)."""
        return self.steps[-1] if self.steps else ""


def ppm_input(prompt: Prompter, question: str, steps: Sequence[str]) -> PPMInput:
    """What the PPM scores for ``steps`` after ``question``: see :func:`ppm_text`."""
    if isinstance(steps, str):
        raise TypeError("steps must be a sequence of step strings, not one str")
    return PPMInput(prompt.render(question), tuple(steps))


def ppm_text(prompt: Prompter, question: str, steps: Sequence[str]) -> str:
    """The text the PPM scores: the rendered prompt followed by the solution steps so far."""
    return ppm_input(prompt, question, steps).text


def ppm_encode(
    tokenizer: Any,
    texts: Sequence[str | PPMInput],
    *,
    max_length: int | None = None,
    padding_side: str | None = None,
    add_special_tokens: bool = True,
    device: Any = None,
    evidence: bool = False,
) -> dict[str, torch.Tensor]:
    """Tokenise ``texts`` for the PPM: ``{"input_ids", "attention_mask"}`` as padded tensors.

    Each text is tokenised on its own (its tokens never depend on the rest of the batch), then
    padded on ``padding_side`` (default: the tokenizer's) with its pad token. Texts longer than
    ``max_length`` keep their *last* ``max_length`` tokens: the value is read at the final token,
    and the most recent steps matter most. ``evidence=True`` (for an evidence PPM; the items must
    be :class:`PPMInput`) adds ``"evidence_mask"``: 2 at the last step's own tokens, 1 at the
    earlier steps', 0 elsewhere.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one str")
    items = [t if isinstance(t, PPMInput) else PPMInput(t) for t in texts]
    if evidence and not all(isinstance(t, PPMInput) for t in texts):
        raise TypeError(
            "an evidence PPM needs to know where each text's steps begin: pass PPMInput "
            "items (see ppm_input), not bare strings"
        )
    seqs = _tokenize(tokenizer, [i.text for i in items], max_length, add_special_tokens)
    marks = _evidence_marks(tokenizer, items, seqs, add_special_tokens) if evidence else None
    return _pad(tokenizer, seqs, padding_side, device, marks)


def _tokenize(
    tokenizer: Any, texts: Sequence[str], max_length: int | None, add_special_tokens: bool = True
) -> list[list[int]]:
    encoded = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    seqs = []
    for ids in encoded:
        if max_length is not None and len(ids) > max_length:
            ids = ids[len(ids) - max_length :]
        if not ids:
            raise ValueError("cannot score an empty text (it encodes to no tokens)")
        seqs.append(list(ids))
    return seqs


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _evidence_marks(
    tokenizer: Any,
    items: Sequence[PPMInput],
    seqs: Sequence[Sequence[int]],
    add_special_tokens: bool,
) -> list[list[tuple[int, int, int]]]:
    """``(start, end, mark)`` token ranges of each item's steps' own text in its (possibly
    truncated) ``seqs``: mark 2 for the last step, 1 for earlier ones.

    A step's own text ends where its ``<output>`` block begins (the executor's, not the policy's
    writing). Character boundaries become token boundaries through token-level common prefixes
    (the text up to a boundary against the whole text), so a token merged across a boundary
    counts with what follows it. The first token is never evidence (nothing predicts it).
    """
    bounds: list[list[tuple[int, int, int]]] = []
    prefixes: list[str] = []
    for item in items:
        ranges = []
        at = len(item.prompt)
        for k, step in enumerate(item.steps):
            own = step.split(OUTPUT_START, 1)[0]
            mark = _LAST_STEP if k == len(item.steps) - 1 else _EARLIER_STEP
            ranges.append((at, at + len(own), mark))
            at += len(step)
        bounds.append(ranges)
        prefixes.extend(item.text[:c] for a, b, _ in ranges for c in (a, b))
    fulls = [item.text for item in items]
    encoded = tokenizer(fulls + prefixes, add_special_tokens=add_special_tokens)["input_ids"]
    full_ids, prefix_ids = encoded[: len(items)], iter(encoded[len(items) :])
    out = []
    for k, seq in enumerate(seqs):
        full = full_ids[k]
        cut = len(full) - len(seq)
        marks = []
        for _a, _b, mark in bounds[k]:
            start = _common_prefix(next(prefix_ids), full) - cut
            end = _common_prefix(next(prefix_ids), full) - cut
            start = max(1, start)
            if end > start:
                marks.append((start, end, mark))
        out.append(marks)
    return out


def _pad(
    tokenizer: Any,
    seqs: Sequence[Sequence[int]],
    padding_side: str | None,
    device: Any,
    marks: Sequence[Sequence[tuple[int, int, int]]] | None = None,
) -> dict[str, torch.Tensor]:
    side = padding_side or getattr(tokenizer, "padding_side", "right")
    if side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    width = max((len(s) for s in seqs), default=0)
    input_ids = torch.full((len(seqs), width), int(pad), dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    evidence_mask = torch.zeros((len(seqs), width), dtype=torch.int8)
    for i, ids in enumerate(seqs):
        offset = width - len(ids) if side == "left" else 0
        input_ids[i, offset : offset + len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, offset : offset + len(ids)] = 1
        if marks is not None:
            for start, end, mark in marks[i]:
                evidence_mask[i, offset + start : offset + end] = mark
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    if marks is not None:
        out["evidence_mask"] = evidence_mask
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out


# --------------------------------------------------------------------------- model


#: Reward units per tanh unit: the reference's ``tanh(r / 5)``. With 1.0 trained rewards quickly
#: exceed ~9, where float32 ``tanh`` is exactly 1.0 and well-separated steps become ties.
DEFAULT_SCALE = 5.0


def squash_reward(rewards: torch.Tensor, scale: float = DEFAULT_SCALE) -> torch.Tensor:
    """Map raw rewards to values in [-1, 1]: ``tanh(rewards / scale)`` (see the module notes)."""
    return torch.tanh(rewards / scale)


@dataclass
class PPMConfig:
    """The PPM's own settings, saved as ``ppm_config.json`` next to the backbone's config."""

    #: values are ``tanh(reward / scale)``
    scale: float = DEFAULT_SCALE
    squash: str = "tanh"
    head: str = "linear"
    head_bias: bool = False
    pooling: str = "last_non_padding_token"
    #: default truncation (in tokens) for scoring; None: no truncation
    max_length: int | None = None
    #: the plain-text prompt template the PPM was trained with (PromptTemplate fields), if known
    prompt_template: dict[str, Any] | None = None
    #: token-evidence features added to the reward (see the module notes); () for the paper's PPM
    evidence: tuple[str, ...] = ()
    format_version: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.evidence, str) or not isinstance(self.evidence, (tuple, list)):
            raise TypeError(
                f"PPMConfig.evidence must be a sequence of feature names, got {self.evidence!r}"
            )
        self.evidence = tuple(self.evidence)
        unknown = [f for f in self.evidence if f not in EVIDENCE_FEATURES]
        if unknown or len(set(self.evidence)) != len(self.evidence):
            raise ValueError(
                f"PPMConfig.evidence must name distinct features among {EVIDENCE_FEATURES}, got "
                f"{self.evidence!r}"
            )
        scale = self.scale
        if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"PPMConfig.scale must be a finite number > 0, got {self.scale!r}")
        if self.squash != "tanh" or self.head != "linear" or self.head_bias:
            raise ValueError("only the tanh squash and a bias-free linear head are supported")
        if self.pooling != "last_non_padding_token":
            raise ValueError(f"unsupported pooling {self.pooling!r}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["evidence"] = list(self.evidence)
        # version 2 only when it matters, so plain PPMs stay readable by older versions
        data["format_version"] = 2 if self.evidence else 1
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PPMConfig:
        version = data.get("format_version", _FORMAT_VERSION)
        if version > _FORMAT_VERSION:
            raise ValueError(
                f"{PPM_CONFIG_NAME} has format_version {version}; this rstar_math reads up to "
                f"{_FORMAT_VERSION}"
            )
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def prompt(self) -> PromptTemplate | None:
        """The recorded prompt template, if any."""
        if self.prompt_template is None:
            return None
        data = dict(self.prompt_template)
        data["few_shots"] = tuple(data.get("few_shots", ()))
        return PromptTemplate(**data)


@dataclass
class PPMOutput:
    """``rewards``: raw head outputs (B,), float32; ``values``: ``tanh(rewards / scale)`` (B,);
    ``evidence``: an evidence PPM's features (B, len(evidence)) in nats, else None."""

    rewards: torch.Tensor
    values: torch.Tensor
    evidence: torch.Tensor | None = None


class PPMModel(nn.Module):
    """A causal-LM backbone with a scalar value head (see the module notes).

    Build one with :meth:`from_policy` (training starts there) or :meth:`from_pretrained`; the
    constructor wraps a ``transformers`` ``*ForSequenceClassification`` model with
    ``num_labels == 1``.
    """

    def __init__(
        self,
        model: Any,
        ppm_config: PPMConfig | None = None,
        tokenizer: Any | None = None,
        *,
        evidence_head: nn.Linear | None = None,
        lm_head: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        if getattr(model.config, "num_labels", None) != 1 or not isinstance(
            getattr(model, "score", None), nn.Linear
        ):
            raise ValueError(
                "PPMModel wraps a *ForSequenceClassification model with num_labels=1 and a "
                "`score` Linear head; use PPMModel.from_policy(...) to build one from a causal LM"
            )
        if model.score.bias is not None:
            raise ValueError("the value head must not have a bias (see rstar_math.scorers.ppm)")
        self.model = model
        self.ppm_config = ppm_config or PPMConfig()
        self.tokenizer = tokenizer
        n_features = len(self.ppm_config.evidence)
        if not n_features and (evidence_head is not None or lm_head is not None):
            raise ValueError("evidence_head and lm_head belong to a PPM with evidence features")
        #: ``Linear(len(evidence), 1, bias=False)`` over the token-evidence features, or None
        self.evidence_head: nn.Linear | None = None
        #: the LM head of an evidence PPM whose backbone does not tie it to the embeddings
        self.lm_head: nn.Linear | None = lm_head
        if n_features:
            if evidence_head is None:
                evidence_head = nn.Linear(n_features, 1, bias=False)
                nn.init.zeros_(evidence_head.weight)
            shape = tuple(evidence_head.weight.shape)
            if shape != (1, n_features) or evidence_head.bias is not None:
                raise ValueError(
                    f"evidence_head must be Linear({n_features}, 1, bias=False) for evidence "
                    f"{self.ppm_config.evidence}"
                )
            self.evidence_head = evidence_head.to(model.score.weight.device)
            if lm_head is None and not _ties_embeddings(model.config):
                raise ValueError(
                    "this backbone does not tie its LM head to its embeddings; an evidence PPM "
                    "over it needs lm_head= (PPMModel.from_policy copies the policy's)"
                )

    # -- parts

    @property
    def backbone(self) -> nn.Module:
        """The transformer body (no LM head)."""
        return self.model.base_model

    @property
    def value_head(self) -> nn.Linear:
        """``Linear(hidden, 1, bias=False)``."""
        return self.model.score

    @property
    def scale(self) -> float:
        return float(self.ppm_config.scale)

    @property
    def evidence(self) -> tuple[str, ...]:
        """The token-evidence features this PPM adds to its reward (() for the paper's PPM)."""
        return self.ppm_config.evidence

    @property
    def device(self) -> torch.device:
        """Where the value head lives (the output device)."""
        return self.value_head.weight.device

    @property
    def input_device(self) -> torch.device:
        """Where input ids go: the embedding's device (differs from ``device`` when sharded)."""
        return self.backbone.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.value_head.weight.dtype

    # -- computation

    def squash(self, rewards: torch.Tensor) -> torch.Tensor:
        """The one definition of the value: ``tanh(rewards / scale)``, in [-1, 1]."""
        return squash_reward(rewards, self.ppm_config.scale)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        evidence_mask: torch.Tensor | None = None,
    ) -> PPMOutput:
        """Rewards and values of a padded batch (either padding side).

        An evidence PPM also needs ``evidence_mask`` (what :func:`ppm_encode` returns with
        ``evidence=True``): the tokens whose log-probabilities are its evidence.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(input_ids.device)
        if self.evidence and evidence_mask is None:
            raise ValueError(
                f"this PPM adds token evidence {self.evidence} to its reward and needs "
                "evidence_mask (ppm_encode(..., evidence=True) over PPMInput items)"
            )
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state
        width = attention_mask.shape[-1]
        last = width - 1 - attention_mask.long().flip(-1).argmax(-1)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        rewards = self.value_head(pooled.to(self.value_head.weight.dtype)).squeeze(-1).float()
        features = None
        if self.evidence_head is not None and evidence_mask is not None:
            features = self._evidence_features(hidden, input_ids, evidence_mask)
            head = self.evidence_head
            rewards = rewards + head(features.to(head.weight.dtype)).squeeze(-1).float().to(
                rewards.device
            )
        return PPMOutput(rewards=rewards, values=self.squash(rewards), evidence=features)

    def _evidence_features(
        self, hidden: torch.Tensor, input_ids: torch.Tensor, evidence_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, len(evidence)): min / mean log-probability of each row's last-step tokens
        (``evidence_mask == 2``) or every step's (``>= 1``), 0 for a row with none; computed only
        at those positions (the full-vocabulary logits of a long text are never materialised)."""
        batch = hidden.shape[0]
        marks = evidence_mask.to(hidden.device)[:, 1:]
        if not any(f.startswith("solution_") for f in self.evidence):
            marks = torch.where(marks == _LAST_STEP, marks, torch.zeros_like(marks))
        rows, cols = marks.nonzero(as_tuple=True)
        states = hidden[rows, cols]  # the state before each evidence token predicts it
        if self.lm_head is not None:
            logits = self.lm_head(states.to(self.lm_head.weight.dtype))
        else:
            weight = self.backbone.get_input_embeddings().weight
            logits = nn.functional.linear(states.to(weight.dtype), weight)
        targets = input_ids.to(hidden.device)[rows, cols + 1]
        logprobs = logits.float().log_softmax(-1).gather(1, targets[:, None])[:, 0]
        is_last = marks[rows, cols] == _LAST_STEP

        def reduce(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            r, lp = rows[keep], logprobs[keep]
            zeros = torch.zeros(batch, device=hidden.device)
            counts = zeros.index_add(0, r, torch.ones_like(lp))
            total = zeros.index_add(0, r, lp)
            lowest = zeros.scatter_reduce(0, r, lp, reduce="amin", include_self=False)
            has = counts > 0
            return (
                torch.where(has, lowest, zeros),
                torch.where(has, total / counts.clamp(min=1), zeros),
            )

        by_name: dict[str, torch.Tensor] = {}
        by_name["min_logprob"], by_name["mean_logprob"] = reduce(is_last)
        by_name["solution_min_logprob"], by_name["solution_mean_logprob"] = reduce(
            torch.ones_like(is_last)
        )
        return torch.stack([by_name[f] for f in self.evidence], dim=-1)

    def encode(
        self,
        texts: Sequence[str | PPMInput],
        *,
        tokenizer: Any | None = None,
        max_length: int | None = None,
        padding_side: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """:func:`ppm_encode` with this model's tokenizer, max length and device."""
        tok = tokenizer if tokenizer is not None else self.tokenizer
        if tok is None:
            raise ValueError("this PPMModel has no tokenizer; pass tokenizer=")
        return ppm_encode(
            tok,
            texts,
            max_length=max_length if max_length is not None else self.ppm_config.max_length,
            padding_side=padding_side,
            device=self.input_device,
            evidence=bool(self.evidence),
        )

    # -- construction and persistence

    @classmethod
    def from_policy(
        cls,
        policy: str | os.PathLike[str] | Any,
        tokenizer: Any | None = None,
        *,
        scale: float = DEFAULT_SCALE,
        head_init_std: float = 0.0,
        evidence: Sequence[str] = (),
        evidence_init: float = 1.0,
        dtype: Any = None,
        device: Any = None,
        **model_kwargs: Any,
    ) -> PPMModel:
        """A new PPM from a policy: its transformer body, a fresh value head.

        ``policy`` is a causal-LM checkpoint directory or a loaded causal LM (its weights are
        copied, the policy object is left untouched). The head starts at zero (``head_init_std``
        > 0 draws it from N(0, std) instead), so a new PPM scores every text 0. ``tokenizer``
        defaults to the policy directory's tokenizer.

        ``evidence`` (e.g. ``("min_logprob",)``) builds an evidence PPM (see the module notes):
        it keeps the policy's LM head and starts every evidence weight at ``evidence_init``.
        """
        auto = transformers.AutoModelForSequenceClassification
        config = PPMConfig(scale=scale, evidence=tuple(evidence))
        if not math.isfinite(evidence_init):
            raise ValueError(f"evidence_init must be a finite number, got {evidence_init!r}")
        lm_weight = None
        if isinstance(policy, (str, os.PathLike)):
            path = check_pretrained_path(policy, "policy")
            model = load_pretrained(
                auto, path, "policy", num_labels=1, dtype=dtype or "auto", **model_kwargs
            )
            if tokenizer is None:
                tokenizer = load_pretrained(transformers.AutoTokenizer, path, "tokenizer")
            if config.evidence and not _ties_embeddings(model.config):
                causal = load_pretrained(
                    transformers.AutoModelForCausalLM, path, "policy", dtype=dtype or "auto",
                    **model_kwargs,
                )  # fmt: skip
                lm_weight = causal.get_output_embeddings().weight.detach().clone()
                del causal
        else:
            if model_kwargs:
                raise ValueError("model_kwargs only apply when loading the policy from a path")
            hf_config = copy.deepcopy(policy.config)
            hf_config.num_labels = 1
            hf_config.architectures = None
            model = auto.from_config(hf_config)
            model.to(dtype=policy.dtype)
            missing, unexpected = model.base_model.load_state_dict(
                policy.base_model.state_dict(), strict=False
            )
            if missing or unexpected:
                raise ValueError(
                    f"the policy's body does not match its config: missing={missing}, "
                    f"unexpected={unexpected}"
                )
            model.to(policy.get_input_embeddings().weight.device)
            if dtype is not None and dtype != "auto":
                model.to(dtype=_as_dtype(dtype))
            if config.evidence and not _ties_embeddings(model.config):
                lm_weight = policy.get_output_embeddings().weight.detach().clone()
        with torch.no_grad():
            if head_init_std > 0:
                model.score.weight.normal_(0.0, head_init_std)
            else:
                model.score.weight.zero_()
        if tokenizer is not None and model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        evidence_head = lm_head = None
        if config.evidence:
            evidence_head = nn.Linear(len(config.evidence), 1, bias=False)
            nn.init.constant_(evidence_head.weight, float(evidence_init))
            if lm_weight is not None:
                lm_head = _linear_from_weight(lm_weight)
        ppm = cls(model, config, tokenizer, evidence_head=evidence_head, lm_head=lm_head)
        if dtype is not None and dtype != "auto" and lm_head is not None:
            lm_head.to(dtype=_as_dtype(dtype))
        if device is not None:
            ppm.to(device)
        ppm.eval()
        return ppm

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        tokenizer: Any | None = None,
        prompt: Prompter | None = None,
        **kwargs: Any,
    ) -> Path:
        """Write the self-contained checkpoint directory (weights, config, tokenizer, ppm config).

        ``prompt``: record the plain :class:`~rstar_math.format.PromptTemplate` the PPM was
        trained with, so :meth:`PPMScorer.from_pretrained` uses it by default. Extra keyword
        arguments go to ``transformers``' ``save_pretrained`` (e.g. ``max_shard_size``).
        """
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        tok = tokenizer if tokenizer is not None else self.tokenizer
        if tok is not None and self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = tok.pad_token_id
        kwargs.setdefault("safe_serialization", True)
        if not kwargs["safe_serialization"]:
            raise ValueError("PPM checkpoints are always saved as safetensors")
        self.model.save_pretrained(path, **kwargs)
        if self.evidence_head is not None:
            tensors = {"evidence.weight": self.evidence_head.weight.detach().contiguous().cpu()}
            if self.lm_head is not None:
                tensors["lm_head.weight"] = self.lm_head.weight.detach().contiguous().cpu()
            _safetensors_torch().save_file(tensors, os.fspath(path / EVIDENCE_WEIGHTS_NAME))
        if tok is not None:
            tok.save_pretrained(path)
        config = self.ppm_config
        if isinstance(prompt, PromptTemplate):
            data = asdict(prompt)
            data["few_shots"] = list(data["few_shots"])
            config = replace(config, prompt_template=data)
            self.ppm_config = config
        elif prompt is not None:
            logger.warning(
                "only a plain PromptTemplate can be recorded in %s; %s not saved",
                PPM_CONFIG_NAME,
                type(prompt).__name__,
            )
        (path / PPM_CONFIG_NAME).write_text(
            json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        return path

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike[str],
        *,
        dtype: Any = None,
        device: Any = None,
        tokenizer: Any | None = None,
        **model_kwargs: Any,
    ) -> PPMModel:
        """Load a directory written by :meth:`save_pretrained`."""
        path = Path(directory).expanduser()
        config_file = path / PPM_CONFIG_NAME
        if not path.exists():
            raise FileNotFoundError(
                f"no PPM checkpoint at {os.fspath(directory)!r}: that directory does not exist "
                "(a PPM checkpoint is a directory written by PPMModel.save_pretrained or "
                "train_ppm, holding ppm_config.json)"
            )
        if not config_file.is_file():
            raise FileNotFoundError(
                f"{path} is not a PPM checkpoint (no {PPM_CONFIG_NAME}); to start a PPM from a "
                "policy checkpoint use PPMModel.from_policy(path)"
            )
        ppm_config = PPMConfig.from_dict(json.loads(config_file.read_text(encoding="utf-8")))
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            os.fspath(path), dtype=dtype or "auto", **model_kwargs
        )
        if tokenizer is None and any(
            (path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
        ):
            tokenizer = transformers.AutoTokenizer.from_pretrained(os.fspath(path))
        evidence_head = lm_head = None
        if ppm_config.evidence:
            evidence_head, lm_head = _load_evidence_weights(path, ppm_config, model)
        ppm = cls(model, ppm_config, tokenizer, evidence_head=evidence_head, lm_head=lm_head)
        if device is not None:
            ppm.to(device)
        ppm.eval()
        return ppm


def _ties_embeddings(config: Any) -> bool:
    """Whether a backbone config ties its LM head to the input embeddings."""
    tied = getattr(config, "tie_word_embeddings", None)
    if tied is None:
        text_config = getattr(config, "get_text_config", None)
        tied = getattr(text_config(), "tie_word_embeddings", False) if text_config else False
    return bool(tied)


def _linear_from_weight(weight: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


def _safetensors_torch() -> Any:
    """``safetensors.torch`` (installed with ``transformers``)."""
    return require("safetensors.torch", "hf")


def _load_evidence_weights(
    path: Path, ppm_config: PPMConfig, model: Any
) -> tuple[nn.Linear, nn.Linear | None]:
    file = path / EVIDENCE_WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(
            f"{path} records token evidence {ppm_config.evidence} in {PPM_CONFIG_NAME} but has no "
            f"{EVIDENCE_WEIGHTS_NAME}; the checkpoint is incomplete"
        )
    tensors = _safetensors_torch().load_file(os.fspath(file))
    weight = tensors.get("evidence.weight")
    if weight is None or tuple(weight.shape) != (1, len(ppm_config.evidence)):
        raise ValueError(
            f"{file}: evidence.weight must have shape (1, {len(ppm_config.evidence)}) for "
            f"evidence {ppm_config.evidence}"
        )
    dtype = model.score.weight.dtype
    evidence_head = _linear_from_weight(weight.to(dtype))
    lm_weight = tensors.get("lm_head.weight")
    lm_head = _linear_from_weight(lm_weight.to(dtype)) if lm_weight is not None else None
    return evidence_head, lm_head


def _as_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"not a torch dtype: {dtype!r}")
    return value


# --------------------------------------------------------------------------- scorer


class PPMScorer:
    """A :class:`~rstar_math.interfaces.Scorer` backed by a :class:`PPMModel`.

    Scores ``ppm_text(prompt, question, steps)`` for each request, in batches of ``batch_size``
    texts (sorted by length to limit padding), without gradients, and returns values in [-1, 1].
    Identical texts in one call are scored once. The result of a text does not depend on the rest
    of the batch or on the padding side.
    """

    def __init__(
        self,
        model: PPMModel,
        tokenizer: Any | None = None,
        prompt: Prompter | None = None,
        batch_size: int = 16,
        device: Any = None,
        max_length: int | None = None,
        padding_side: str | None = None,
    ) -> None:
        if not isinstance(model, PPMModel):
            raise TypeError(f"model must be a PPMModel, got {type(model).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        if self.tokenizer is None:
            raise ValueError("PPMScorer needs a tokenizer (none passed, none on the model)")
        if prompt is None:
            prompt = model.ppm_config.prompt() or PromptTemplate.sft()
        self.prompt = prompt
        self.batch_size = batch_size
        self.max_length = max_length if max_length is not None else model.ppm_config.max_length
        self.padding_side = padding_side
        self._lock = threading.Lock()
        if device is not None:
            model.to(device)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike[str],
        *,
        prompt: Prompter | None = None,
        batch_size: int = 16,
        device: Any = None,
        dtype: Any = None,
        max_length: int | None = None,
        **model_kwargs: Any,
    ) -> PPMScorer:
        """Load a PPM checkpoint directory. Default device: CUDA if available, else CPU; default
        dtype: the checkpoint's on CUDA, float32 on CPU."""
        if device is None and "device_map" not in model_kwargs:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype is None and device is not None and torch.device(device).type == "cpu":
            dtype = torch.float32
        model = PPMModel.from_pretrained(directory, dtype=dtype, device=device, **model_kwargs)
        return cls(model, prompt=prompt, batch_size=batch_size, max_length=max_length)

    def texts(self, requests: Sequence[ScoreRequest]) -> list[str]:
        """The texts :meth:`score` would score."""
        return [ppm_text(self.prompt, r.question, r.steps) for r in requests]

    def inputs(self, requests: Sequence[ScoreRequest]) -> list[PPMInput]:
        """What :meth:`score` scores: each request's rendered prompt and steps."""
        return [ppm_input(self.prompt, r.question, r.steps) for r in requests]

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """One value in [-1, 1] per request, in order."""
        return self.score_inputs(self.inputs(requests))

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Values in [-1, 1] for already-built texts (see :func:`ppm_text`).

        Not for an evidence PPM, which needs to know where each text's steps begin: use
        :meth:`score` or :meth:`score_inputs`.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one str")
        if self.model.evidence:
            raise ValueError(
                f"this PPM adds token evidence {self.model.evidence} of each text's steps; "
                "bare texts do not say where they begin: use score(requests) or "
                "score_inputs([ppm_input(prompt, question, steps), ...])"
            )
        return self.score_inputs([PPMInput(t) for t in texts])

    def score_inputs(self, inputs: Sequence[PPMInput]) -> list[float]:
        """Values in [-1, 1] for :class:`PPMInput` items (see :func:`ppm_input`)."""
        inputs = list(inputs)
        if not inputs:
            return []
        for item in inputs:
            if not isinstance(item, PPMInput):
                raise TypeError(f"score_inputs takes PPMInput items, got {type(item).__name__}")
        unique = list(dict.fromkeys(inputs))
        seqs = _tokenize(self.tokenizer, [u.text for u in unique], self.max_length)
        spans = _evidence_marks(self.tokenizer, unique, seqs, True) if self.model.evidence else None
        order = sorted(range(len(unique)), key=lambda i: -len(seqs[i]))
        values: dict[PPMInput, float] = {}
        with self._lock:
            self._score_sorted(unique, seqs, spans, order, values)
        return [values[t] for t in inputs]

    def _score_sorted(
        self,
        unique: list[PPMInput],
        seqs: list[list[int]],
        spans: list[list[tuple[int, int, int]]] | None,
        order: list[int],
        values: dict[PPMInput, float],
    ) -> None:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    chunk = order[start : start + self.batch_size]
                    enc = _pad(
                        self.tokenizer,
                        [seqs[i] for i in chunk],
                        self.padding_side,
                        self.model.input_device,
                        [spans[i] for i in chunk] if spans is not None else None,
                    )
                    out = self.model(
                        enc["input_ids"], enc["attention_mask"], enc.get("evidence_mask")
                    )
                    for i, value in zip(chunk, out.values.tolist(), strict=True):
                        values[unique[i]] = float(value)
        finally:
            self.model.train(was_training)

    def __repr__(self) -> str:
        return f"PPMScorer(scale={self.model.scale}, batch_size={self.batch_size})"
