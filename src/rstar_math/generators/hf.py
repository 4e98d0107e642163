"""Hugging Face ``transformers`` policy backend.

:class:`HFGenerator` samples continuations with its own decoding loop over a KV cache rather than
``model.generate``. Owning the loop is what makes the :class:`~rstar_math.interfaces.Generator`
contract exact:

* **Stop markers.** A sample ends at the first occurrence of any of its request's stop strings in
  the *decoded text*, whether the marker is one special token (``<end_of_step>`` in a tokenizer
  that has it) or several ordinary tokens. The completion's text is cut before the marker, the
  marker is reported in ``Completion.stop``, and nothing generated after it is ever returned.
* **Per-request seeds.** Each sample owns a CPU ``torch.Generator`` seeded from its request's seed
  and its sample index, and sampling is done row by row with those generators (inverse-CDF
  sampling over the sorted distribution). A seeded request therefore yields the same completions
  whatever else shares the batch, its position in it, the padding around it, or how waves are
  split (up to the floating-point noise of batched matrix products, far below what changes a
  sampled token in practice); sample ``j`` is also the same whatever ``n`` is. Unseeded requests
  draw a seed from the generator's own source (``seed=`` of the constructor), never from torch's
  global RNG.
* **Shared prompts.** Every distinct prompt is tokenised once and run through the model once
  (left-padded prefill with explicit ``position_ids``); the prompt's KV cache is then repeated to
  its ``n`` samples (``DynamicCache.batch_select_indices``), and all samples of all requests are
  decoded together, one token per step, finished rows pruned from the batch as they stop.
  Greedy requests (``temperature == 0``) decode one sample and copy it ``n`` times.

torch and transformers are imported lazily: importing this module never needs them, constructing
an :class:`HFGenerator` without them raises an ImportError naming the ``hf`` extra.
"""

from __future__ import annotations

import inspect
import logging
import os
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rstar_math._deps import require
from rstar_math.interfaces import Completion, GenerationRequest, GenerationResult

if TYPE_CHECKING:
    import torch

__all__ = ["HFGenerator"]

logger = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1
#: Extra tokens decoded around a stop string's byte length when scanning for it (covers partial
#: UTF-8 characters and decoders that treat the first token of a sequence specially).
_STOP_WINDOW_MARGIN = 4


def _sample_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for sample ``index`` of a request seeded with ``seed``."""
    x = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    return x & ((1 << 63) - 1)


def _find_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """The earliest stop string in ``text`` as ``(position, stop)``; ties go to the shorter."""
    best: tuple[int, int, str] | None = None
    for stop in stops:
        pos = text.find(stop)
        if pos != -1 and (best is None or (pos, len(stop)) < best[:2]):
            best = (pos, len(stop), stop)
    return None if best is None else (best[0], best[2])


def _looks_local(path: str) -> bool:
    """Whether ``path`` can only be a local path (a Hub id is ``name`` or ``owner/name``)."""
    return (
        os.path.isabs(path)
        or path in (".", "..")
        or path.startswith(("./", "../", "~", ".\\", "..\\"))
        or "\\" in path
        or path.count("/") > 1
    )


def check_pretrained_path(
    path: str | os.PathLike[str], what: str = "model", marker: str | None = "config.json"
) -> str:
    """Fail with a clear message on a checkpoint path that cannot be loaded; return it as str.

    A path that exists must be a directory holding ``marker`` (the file ``save_pretrained``
    writes first; ``None`` skips that check). A path that does not exist but can only be local
    (absolute, ``./``, ``~``, more than one ``/``) is an error here, before ``transformers``
    would try it as a Hugging Face Hub id and fail with a message about repo ids or the network.
    """
    text = os.fspath(path)
    local = os.path.expanduser(text)
    hint = (
        "pass a directory written by save_pretrained (config.json, tokenizer files and the "
        "weights) or a Hugging Face Hub id such as 'Qwen/Qwen2.5-Math-7B'"
    )
    if os.path.exists(local):
        if not os.path.isdir(local):
            raise NotADirectoryError(f"the {what} path {text!r} is a file, not a directory: {hint}")
        if marker is not None and not os.path.isfile(os.path.join(local, marker)):
            raise FileNotFoundError(
                f"the {what} directory {text!r} has no {marker}, so it is not a saved "
                f"checkpoint: {hint}"
            )
        return local
    if _looks_local(text):
        raise FileNotFoundError(f"no {what} at {text!r}: that directory does not exist; {hint}")
    return text


def load_pretrained(loader: Any, path: str, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(path, **kwargs)`` with an error that says what to do."""
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as exc:
        if os.path.isdir(path):
            advice = (
                f"the directory {path!r} is incomplete (save_pretrained writes config.json, the "
                "tokenizer files and the weights); save the checkpoint again"
            )
        else:
            advice = (
                f"{path!r} is not a local directory, so it was tried as a Hugging Face Hub id: "
                "check the spelling, or download it first (the Hub needs network access; "
                "HF_HUB_OFFLINE=1 uses only the local cache)"
            )
        raise OSError(f"could not load the {what}: {advice}. Cause: {exc}") from exc


def markers_missing(tokenizer: Any, markers: Sequence[str] | None = None) -> list[str]:
    """The step markers (default: the stop markers) that are not one token of ``tokenizer``."""
    if markers is None:
        from rstar_math.format import STOP_MARKERS

        markers = STOP_MARKERS
    missing = []
    for marker in markers:
        try:
            ids = tokenizer.encode(marker, add_special_tokens=False)
        except Exception:  # an exotic tokenizer: nothing to say
            return []
        if len(ids) != 1:
            missing.append(marker)
    return missing


def _warn_if_markers_missing(tokenizer: Any) -> None:
    missing = markers_missing(tokenizer)
    if missing:
        logger.warning(
            "the tokenizer has no single token for the step marker(s) %s. Generation still stops "
            "at them (they are matched in the decoded text), but a model that never saw the step "
            "format rarely writes them and each step then runs to max_step_tokens: prompt it "
            "few-shot (PromptTemplate.few_shot(...), as in round 1) or fine-tune it with "
            "rstar_math.training.train_sft (which adds the markers to the tokenizer). If this "
            "model was fine-tuned, load the tokenizer saved with it.",
            ", ".join(missing),
        )


def _resolve_dtype(dtype: Any) -> Any:
    if dtype is None or dtype == "auto":
        return dtype
    torch = require("torch", "hf")
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        return getattr(torch, dtype)
    raise ValueError(
        f"dtype must be a torch.dtype, its name (e.g. 'bfloat16') or 'auto'; got {dtype!r}"
    )


@dataclass
class _Row:
    """One sample being decoded."""

    request: int
    sample: int
    prompt: int  # index into the wave's distinct prompts
    temperature: float
    top_p: float
    max_tokens: int
    stops: tuple[str, ...]
    window: int
    generator: Any  # torch.Generator or None for greedy rows
    ids: list[int] = field(default_factory=list)
    num_tokens: int = 0
    done: bool = False


class HFGenerator:
    """A :class:`~rstar_math.interfaces.Generator` over a ``transformers`` causal LM.

    Args:
        model: a model directory / hub-style path loaded with ``AutoModelForCausalLM``, or an
            already-built causal LM (see also :meth:`from_model`).
        tokenizer: a tokenizer object or path; defaults to the model path (required with a model
            object).
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...). Default: the model
            object's device, else CUDA when available, else CPU. Ignored when ``model_kwargs``
            holds a ``device_map`` (the model is then placed by accelerate).
        dtype: ``torch.dtype``, its name, or ``"auto"`` (the checkpoint's). Default when loading
            from a path: ``"auto"`` on accelerators, float32 on CPU. With a model object the
            model is cast only when a dtype is given.
        chat_template: wrap each request's prompt as a single user message in the tokenizer's
            chat template (assistant turn opened). Meant for single-turn prompts; for step-wise
            search whose prompt already holds the partial solution, render the chat template once
            with :class:`~rstar_math.format.ChatPromptTemplate` instead and keep this off.
        system_prompt: optional system message used with ``chat_template``.
        add_special_tokens: whether the tokenizer adds its special tokens (e.g. BOS) when
            encoding a prompt. Default: True for plain prompts, False for chat-templated ones
            (the template already holds them).
        max_batch_size: at most this many samples are decoded together; larger waves are split
            (a prompt whose samples span two waves is prefilled once per wave).
        seed: seeds the source of per-request seeds for requests that carry none, making a whole
            run reproducible; ``None`` draws them from the OS.
        eos_token_ids: token ids that end a sample (``stop=None``). Default: the tokenizer's EOS
            plus the model's ``generation_config.eos_token_id``.
        model_kwargs: extra keyword arguments for ``from_pretrained`` (``device_map``,
            ``attn_implementation``, ``trust_remote_code`` ...).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Any,
        tokenizer: str | os.PathLike[str] | Any | None = None,
        *,
        device: str | Any | None = None,
        dtype: Any = None,
        chat_template: bool = False,
        system_prompt: str | None = None,
        add_special_tokens: bool | None = None,
        max_batch_size: int = 128,
        seed: int | None = None,
        eos_token_ids: Sequence[int] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        torch = require("torch", "hf")
        transformers = require("transformers", "hf")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        model_kwargs = dict(model_kwargs or {})
        dtype = _resolve_dtype(dtype)

        if isinstance(model, (str, os.PathLike)):
            path = check_pretrained_path(model, "model")
            if device is None and "device_map" not in model_kwargs:
                device = "cuda" if torch.cuda.is_available() else "cpu"
            if dtype is None:
                on_cpu = "device_map" not in model_kwargs and torch.device(device).type == "cpu"
                dtype = torch.float32 if on_cpu else "auto"
            loaded = load_pretrained(
                transformers.AutoModelForCausalLM, path, "model", dtype=dtype, **model_kwargs
            )
            if "device_map" not in model_kwargs:
                loaded = loaded.to(device)
            model = loaded
            if tokenizer is None:
                tokenizer = path
        else:
            if model_kwargs:
                raise ValueError("model_kwargs only apply when loading the model from a path")
            if tokenizer is None:
                raise ValueError("a tokenizer is required when passing a model object")
            if device is not None or isinstance(dtype, torch.dtype):
                model = model.to(
                    device=device, dtype=dtype if isinstance(dtype, torch.dtype) else None
                )
        if isinstance(tokenizer, (str, os.PathLike)):
            tok_path = check_pretrained_path(tokenizer, "tokenizer", marker=None)
            tokenizer = load_pretrained(transformers.AutoTokenizer, tok_path, "tokenizer")

        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.device = model.get_input_embeddings().weight.device
        self.chat_template = chat_template
        self.system_prompt = system_prompt
        if chat_template and getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("chat_template=True but the tokenizer has no chat_template")
        if add_special_tokens is None:
            add_special_tokens = not chat_template
        self.add_special_tokens = add_special_tokens
        self.max_batch_size = max_batch_size
        self._seed_source = random.Random(seed) if seed is not None else random.SystemRandom()

        if eos_token_ids is None:
            found: set[int] = set()
            for source in (
                getattr(tokenizer, "eos_token_id", None),
                getattr(getattr(model, "generation_config", None), "eos_token_id", None),
            ):
                if isinstance(source, int):
                    found.add(source)
                elif isinstance(source, (list, tuple)):
                    found.update(int(t) for t in source)
            eos_token_ids = sorted(found)
        self.eos_token_ids: frozenset[int] = frozenset(int(t) for t in eos_token_ids)
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = min(self.eos_token_ids) if self.eos_token_ids else 0
        self.pad_token_id: int = int(pad)
        self.max_positions: int | None = getattr(
            model.config.get_text_config(decoder=True), "max_position_embeddings", None
        )
        forward_parameters = inspect.signature(model.forward).parameters
        self._logits_to_keep = "logits_to_keep" in forward_parameters
        # transformers 5.25 renamed forward's ``past_key_values`` to ``cache`` (the old name is
        # deprecated, to be removed in 5.40); older releases only know the old name
        self._cache_argument = "cache" if "cache" in forward_parameters else "past_key_values"
        self._lock = threading.Lock()
        _warn_if_markers_missing(tokenizer)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, **kwargs: Any) -> HFGenerator:
        """Wrap an already-built causal LM and its tokenizer (same options as the constructor)."""
        if isinstance(model, (str, os.PathLike)):
            raise TypeError("from_model expects a model object; pass a path to HFGenerator(...)")
        return cls(model, tokenizer, **kwargs)

    # ------------------------------------------------------------------ public API

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Sample ``n`` continuations per request; one result per request, in order.

        Calls from several threads are serialised (one model, one decoding loop at a time).
        """
        requests = list(requests)
        if not requests:
            return []
        with self._lock:
            return self._generate(requests)

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        torch = require("torch", "hf")

        prompt_ids = self._encode_prompts([r.prompt for r in requests])
        # distinct prompts, each encoded once
        distinct: dict[tuple[int, ...], int] = {}
        request_prompt = [distinct.setdefault(ids, len(distinct)) for ids in prompt_ids]
        distinct_ids = list(distinct)

        rows: list[_Row] = []
        for i, req in enumerate(requests):
            plen = len(prompt_ids[i])
            max_tokens = req.max_tokens
            if self.max_positions is not None:
                room = self.max_positions - plen
                if room < 1:
                    raise ValueError(
                        f"request {i}: the prompt has {plen} tokens, the model's context is "
                        f"{self.max_positions}"
                    )
                max_tokens = min(max_tokens, room)
            seed = req.seed if req.seed is not None else self._seed_source.getrandbits(63)
            stops = tuple(s for s in req.stop if s)
            window = max((len(s.encode("utf-8")) for s in stops), default=0) + _STOP_WINDOW_MARGIN
            greedy = req.temperature == 0
            for j in range(1 if greedy else req.n):
                gen = None
                if not greedy:
                    gen = torch.Generator(device="cpu")
                    gen.manual_seed(_sample_seed(seed, j))
                rows.append(
                    _Row(
                        request=i,
                        sample=j,
                        prompt=request_prompt[i],
                        temperature=req.temperature,
                        top_p=req.top_p,
                        max_tokens=max_tokens,
                        stops=stops,
                        window=window,
                        generator=gen,
                    )
                )

        with torch.inference_mode():
            for start in range(0, len(rows), self.max_batch_size):
                self._decode_wave(rows[start : start + self.max_batch_size], distinct_ids)

        completions: list[list[Completion]] = [[] for _ in requests]
        for row in rows:
            completions[row.request].append(self._finish(row))
        results = []
        for i, req in enumerate(requests):
            comps = completions[i]
            if req.temperature == 0 and req.n > 1:
                comps = comps * req.n
            results.append(GenerationResult(completions=comps, prompt_tokens=len(prompt_ids[i])))
        return results

    # ------------------------------------------------------------------ internals

    def _render(self, prompt: str) -> str:
        if not self.chat_template:
            return prompt
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": prompt})
        return str(
            self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        )

    def _encode_prompts(self, prompts: Sequence[str]) -> list[tuple[int, ...]]:
        texts = {}
        for p in prompts:
            if p not in texts:
                texts[p] = self._render(p)
        unique = list(texts)
        encoded = self.tokenizer(
            [texts[p] for p in unique], add_special_tokens=self.add_special_tokens
        )["input_ids"]
        by_prompt = {}
        for p, ids in zip(unique, encoded, strict=True):
            ids = tuple(int(t) for t in ids)
            if not ids:
                bos = getattr(self.tokenizer, "bos_token_id", None)
                if bos is None:
                    raise ValueError("an empty prompt needs a tokenizer with a BOS token")
                ids = (int(bos),)
            by_prompt[p] = ids
        return [by_prompt[p] for p in prompts]

    def _forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, cache: Any) -> Any:
        kwargs: dict[str, Any] = {self._cache_argument: cache}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **kwargs,
        )
        return out.logits[:, -1, :].float()

    def _decode_wave(self, rows: list[_Row], distinct_ids: list[tuple[int, ...]]) -> None:
        torch = require("torch", "hf")
        transformers = require("transformers", "hf")
        device = self.device

        # prefill: the wave's distinct prompts, left-padded, once each
        wave_prompts = sorted({row.prompt for row in rows})
        local = {p: k for k, p in enumerate(wave_prompts)}
        lengths = [len(distinct_ids[p]) for p in wave_prompts]
        width = max(lengths)
        input_ids = torch.full((len(wave_prompts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(wave_prompts), width), dtype=torch.long)
        for k, p in enumerate(wave_prompts):
            ids = distinct_ids[p]
            input_ids[k, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[k, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = transformers.DynamicCache(config=self.model.config)
        logits = self._forward(input_ids, mask, positions, cache)
        logger.debug(
            "prefill: %d distinct prompts (%d tokens) for %d samples",
            len(wave_prompts),
            sum(lengths),
            len(rows),
        )

        # expand the prompt cache to the samples
        select = torch.tensor([local[row.prompt] for row in rows], dtype=torch.long, device=device)
        cache.batch_select_indices(select)
        logits = logits[select]
        mask = mask[select]
        next_pos = mask.sum(-1)
        temps = torch.tensor([row.temperature for row in rows], dtype=torch.float32, device=device)
        top_ps = torch.tensor([row.top_p for row in rows], dtype=torch.float32, device=device)
        active = list(range(len(rows)))  # slot -> row index

        while True:
            batch_rows = [rows[r] for r in active]
            uniforms = torch.tensor(
                [
                    0.0
                    if row.generator is None
                    else torch.rand((), generator=row.generator, dtype=torch.float64).item()
                    for row in batch_rows
                ],
                dtype=torch.float64,
            ).to(device)
            tokens = _sample_tokens(logits, temps, top_ps, uniforms).tolist()
            self._advance(batch_rows, tokens)

            keep = [slot for slot, row in enumerate(batch_rows) if not row.done]
            if not keep:
                break
            next_tokens = torch.tensor([tokens[s] for s in keep], dtype=torch.long, device=device)
            if len(keep) < len(batch_rows):
                idx = torch.tensor(keep, dtype=torch.long, device=device)
                cache.batch_select_indices(idx)
                mask, next_pos, temps, top_ps = mask[idx], next_pos[idx], temps[idx], top_ps[idx]
                active = [active[s] for s in keep]
            mask = torch.cat([mask, mask.new_ones((len(keep), 1))], dim=-1)
            logits = self._forward(next_tokens[:, None], mask, next_pos[:, None], cache)
            next_pos = next_pos + 1

    def _advance(self, rows: list[_Row], tokens: list[int]) -> None:
        """Append one sampled token per row and decide which rows are finished."""
        scan_slots = []
        for slot, (row, tok) in enumerate(zip(rows, tokens, strict=True)):
            row.num_tokens += 1
            if tok in self.eos_token_ids:
                row.done = True
                continue
            row.ids.append(tok)
            if row.num_tokens >= row.max_tokens:
                row.done = True
            elif row.stops:
                scan_slots.append(slot)
        if scan_slots:
            tails = self.tokenizer.batch_decode(
                [rows[s].ids[-rows[s].window :] for s in scan_slots],
                skip_special_tokens=False,
                clean_up_tokenization_spaces=False,
            )
            for slot, tail in zip(scan_slots, tails, strict=True):
                if any(stop in tail for stop in rows[slot].stops):
                    rows[slot].done = True

    def _finish(self, row: _Row) -> Completion:
        text = self.tokenizer.decode(
            row.ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        found = _find_stop(text, row.stops) if row.stops else None
        if found is None:
            return Completion(text=text, stop=None, num_tokens=row.num_tokens)
        pos, stop = found
        return Completion(text=text[:pos], stop=stop, num_tokens=row.num_tokens)

    def __repr__(self) -> str:
        name = (
            getattr(getattr(self.model, "config", None), "_name_or_path", "")
            or type(self.model).__name__
        )
        return f"HFGenerator({name!r}, device={str(self.device)!r})"


def _sample_tokens(
    logits: torch.Tensor, temps: torch.Tensor, top_ps: torch.Tensor, uniforms: torch.Tensor
) -> torch.Tensor:
    """One token per row: argmax where ``temps == 0``, else top-p sampling at temperature.

    Sampling is by inverse CDF over the probabilities sorted in descending order (stable sort, so
    ties break by token id) with the row's own uniform draw, so a row's token depends only on its
    logits and its draw, never on the other rows.
    """
    torch = require("torch", "hf")
    greedy = temps <= 0
    safe_t = torch.where(greedy, torch.ones_like(temps), temps)
    probs = torch.softmax(logits / safe_t[:, None], dim=-1)
    sorted_p, sorted_idx = torch.sort(probs, dim=-1, descending=True, stable=True)
    before = torch.cumsum(sorted_p, dim=-1) - sorted_p
    # keep the smallest prefix whose mass reaches top_p (the first token is always kept)
    removed = (before >= top_ps[:, None]) & (top_ps[:, None] < 1.0)
    removed[:, 0] = False
    sorted_p = sorted_p.masked_fill(removed, 0.0)
    cdf = torch.cumsum(sorted_p.double(), dim=-1)
    threshold = uniforms[:, None] * cdf[:, -1:]
    choice = torch.searchsorted(cdf, threshold, right=True).squeeze(-1)
    last_kept = (~removed).sum(-1) - 1
    choice = torch.minimum(choice, last_kept)
    sampled = sorted_idx.gather(-1, choice[:, None]).squeeze(-1)
    return torch.where(greedy, logits.argmax(dim=-1), sampled)
