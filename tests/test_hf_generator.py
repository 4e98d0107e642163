"""HFGenerator on real tiny Qwen2 models (CPU, float32).

The trained tiny policy writes whole solutions when nothing stops it, so the stop tests show a
model that really would run past ``<end_of_step>`` being cut there.
"""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from typing import Any

import pytest

from rstar_math.format import CODE_END, STEP_END, STOP_MARKERS
from rstar_math.interfaces import GenerationRequest, Generator

pytestmark = pytest.mark.hf

Q_ADD = "What is 2 + 3?"
Q_MUL = "What is 4 times 6?"


@pytest.fixture(scope="module")
def trained_gen(tiny_trained_policy: Any) -> Any:
    from rstar_math.generators import HFGenerator

    return HFGenerator.from_model(tiny_trained_policy.model, tiny_trained_policy.tokenizer)


@pytest.fixture(scope="module")
def random_gen(tiny_policy: Any, tiny_tokenizer: Any) -> Any:
    from rstar_math.generators import HFGenerator

    return HFGenerator.from_model(tiny_policy, tiny_tokenizer)


def greedy(prompt: str, **kw: Any) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, temperature=0.0, **kw)


def test_import_does_not_pull_torch() -> None:
    code = (
        "import sys, rstar_math.generators, rstar_math.scorers\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
        "assert 'HFGenerator' in dir(rstar_math.generators)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_satisfies_generator_protocol(random_gen: Any) -> None:
    assert isinstance(random_gen, Generator)


# --------------------------------------------------------------------------- stop markers


def test_trained_model_runs_past_the_marker_without_stop(
    trained_gen: Any, tiny_trained_policy: Any
) -> None:
    prompt, solution, _ = tiny_trained_policy.problems[Q_ADD]
    (result,) = trained_gen.generate([greedy(prompt, max_tokens=200)])
    comp = result.completions[0]
    # the model writes the whole solution, markers and all, then EOS
    assert comp.text == solution
    assert comp.stop is None
    assert STEP_END in comp.text and comp.text.index(STEP_END) < len(comp.text) - 100


def test_cut_at_end_of_step(trained_gen: Any, tiny_trained_policy: Any) -> None:
    prompt, solution, _ = tiny_trained_policy.problems[Q_ADD]
    (result,) = trained_gen.generate([greedy(prompt, stop=STOP_MARKERS, max_tokens=200)])
    comp = result.completions[0]
    assert comp.stop == STEP_END
    assert comp.text == solution[: solution.index(STEP_END)]
    assert comp.text == "<code>\n# Step 1: Add the numbers\nx = 2 + 3\n"
    for marker in STOP_MARKERS:
        assert marker not in comp.text
    # the marker is one special token here: generation ended exactly on it
    tok = tiny_trained_policy.tokenizer
    expected = tok(comp.text, add_special_tokens=False)["input_ids"]
    assert comp.num_tokens == len(expected) + 1
    assert result.prompt_tokens == len(tok(prompt)["input_ids"])


def test_continuing_from_a_step_stops_at_the_next_marker(
    trained_gen: Any, tiny_trained_policy: Any
) -> None:
    prompt, solution, _ = tiny_trained_policy.problems[Q_ADD]
    (first,) = trained_gen.generate([greedy(prompt, stop=STOP_MARKERS)])
    step1 = first.completions[0].text + first.completions[0].stop
    (second,) = trained_gen.generate([greedy(prompt + step1, stop=STOP_MARKERS)])
    comp = second.completions[0]
    assert comp.stop == CODE_END
    assert comp.text == "\n\n# Now print the final answer\nprint(x)\n"
    assert (step1 + comp.text + comp.stop) in solution


def test_multi_token_stop_string_cut_mid_token(trained_gen: Any, tiny_trained_policy: Any) -> None:
    prompt, solution, _ = tiny_trained_policy.problems[Q_ADD]
    tok = tiny_trained_policy.tokenizer
    stop = "nt(x"  # starts inside a token and spans several
    assert len(tok(stop, add_special_tokens=False)["input_ids"]) > 1
    (result,) = trained_gen.generate([greedy(prompt, stop=(stop,), max_tokens=200)])
    comp = result.completions[0]
    assert comp.stop == stop
    assert comp.text == solution[: solution.index(stop)]
    assert comp.text.endswith("pri")


def test_earliest_of_several_stops_wins(trained_gen: Any, tiny_trained_policy: Any) -> None:
    prompt, solution, _ = tiny_trained_policy.problems[Q_ADD]
    stops = ("print", "x = 2", "\\boxed")
    (result,) = trained_gen.generate([greedy(prompt, stop=stops, max_tokens=200)])
    comp = result.completions[0]
    assert comp.stop == "x = 2"
    assert comp.text == solution[: solution.index("x = 2")]


def test_max_tokens_gives_no_stop(trained_gen: Any, tiny_trained_policy: Any) -> None:
    prompt, solution, _ = tiny_trained_policy.problems[Q_ADD]
    (result,) = trained_gen.generate([greedy(prompt, stop=STOP_MARKERS, max_tokens=4)])
    comp = result.completions[0]
    assert comp.stop is None
    assert comp.num_tokens == 4
    assert solution.startswith(comp.text) and len(comp.text) < solution.index(STEP_END)


def test_eos_ends_without_stop_and_is_not_in_text(
    trained_gen: Any, tiny_trained_policy: Any
) -> None:
    prompt, solution, _ = tiny_trained_policy.problems[Q_MUL]
    tok = tiny_trained_policy.tokenizer
    (result,) = trained_gen.generate([greedy(prompt, max_tokens=300)])
    comp = result.completions[0]
    assert comp.text == solution and comp.stop is None
    assert tok.eos_token not in comp.text
    assert comp.num_tokens == len(tok(solution, add_special_tokens=False)["input_ids"]) + 1


def test_sampled_steps_never_contain_text_after_a_marker(
    trained_gen: Any, tiny_trained_policy: Any
) -> None:
    prompt, _, _ = tiny_trained_policy.problems[Q_MUL]
    req = GenerationRequest(prompt, n=8, stop=STOP_MARKERS, temperature=1.5, seed=3, max_tokens=60)
    (result,) = trained_gen.generate([req])
    assert len(result.completions) == 8
    for comp in result.completions:
        assert all(m not in comp.text for m in STOP_MARKERS)
        assert comp.stop in (*STOP_MARKERS, None)
        assert 1 <= comp.num_tokens <= 60


# --------------------------------------------------------------------------- seeds, sampling


def test_seeded_request_is_independent_of_the_batch(random_gen: Any) -> None:
    target = GenerationRequest("Find x such that", n=3, seed=11, max_tokens=24, stop=("e",))
    (alone,) = random_gen.generate([target])
    others = [
        GenerationRequest(
            "A much longer prompt with many more tokens in it", n=2, seed=1, max_tokens=30
        ),
        GenerationRequest("x", n=4, seed=2, max_tokens=40, temperature=0.7, top_p=0.9),
    ]
    batched = random_gen.generate([others[0], target, others[1]])
    assert batched[1].completions == alone.completions
    # also when the wave is split and the request is last
    from rstar_math.generators import HFGenerator

    small = HFGenerator.from_model(random_gen.model, random_gen.tokenizer, max_batch_size=4)
    split = small.generate([*others, target])
    assert split[2].completions == alone.completions
    assert [r.completions for r in split[:2]] == [r.completions for r in (batched[0], batched[2])]
    # sample j of a seeded request does not depend on n either
    (more,) = random_gen.generate([dataclasses.replace(target, n=5)])
    assert more.completions[:3] == alone.completions


def test_different_seeds_and_samples_differ(random_gen: Any) -> None:
    a, b = random_gen.generate(
        [
            GenerationRequest("Find x", n=3, seed=1, max_tokens=16),
            GenerationRequest("Find x", n=3, seed=2, max_tokens=16),
        ]
    )
    texts_a = [c.text for c in a.completions]
    texts_b = [c.text for c in b.completions]
    assert len(set(texts_a)) == 3  # samples of one request differ
    assert texts_a != texts_b
    # unseeded requests draw fresh seeds
    (c,) = random_gen.generate([GenerationRequest("Find x", n=1, max_tokens=16)])
    (d,) = random_gen.generate([GenerationRequest("Find x", n=1, max_tokens=16)])
    assert c.completions != d.completions


def test_generator_seed_makes_unseeded_runs_reproducible(
    tiny_policy: Any, tiny_tokenizer: Any
) -> None:
    from rstar_math.generators import HFGenerator

    reqs = [GenerationRequest("Find x", n=2, max_tokens=12)]
    one = HFGenerator.from_model(tiny_policy, tiny_tokenizer, seed=5).generate(reqs)
    two = HFGenerator.from_model(tiny_policy, tiny_tokenizer, seed=5).generate(reqs)
    assert one == two


def test_greedy_matches_transformers_generate(random_gen: Any, tiny_policy: Any) -> None:
    torch = pytest.importorskip("torch")
    tok = random_gen.tokenizer
    prompts = ["Find x such that 2x + 3 = 11.", "print"]
    ours = random_gen.generate([greedy(p, max_tokens=20) for p in prompts])
    for prompt, result in zip(prompts, ours, strict=True):
        enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = tiny_policy.generate(
                **enc, do_sample=False, max_new_tokens=20, pad_token_id=tok.pad_token_id
            )
        new = out[0, enc["input_ids"].shape[1] :].tolist()
        assert len(new) == 20 and tok.eos_token_id not in new
        expected = tok.decode(new, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert result.completions[0].text == expected
        assert result.completions[0].num_tokens == 20
        assert result.prompt_tokens == enc["input_ids"].shape[1]


def test_greedy_n_copies_and_tiny_top_p_is_greedy(random_gen: Any) -> None:
    (g,) = random_gen.generate([greedy("Find x", n=3, max_tokens=10)])
    assert len(g.completions) == 3 and len(set(g.completions)) == 1
    (p,) = random_gen.generate(
        [GenerationRequest("Find x", n=2, temperature=1.0, top_p=1e-6, seed=4, max_tokens=10)]
    )
    assert p.completions == g.completions[:2]


# --------------------------------------------------------------------------- shared prompts


def test_each_distinct_prompt_is_prefilled_once(random_gen: Any) -> None:
    calls: list[tuple[int, int]] = []

    def hook(module: Any, args: Any, kwargs: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls.append(tuple(ids.shape))

    handle = random_gen.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        results = random_gen.generate(
            [
                GenerationRequest("Find x such that", n=4, seed=1, max_tokens=6),
                GenerationRequest("What is 2 + 3?", n=3, seed=2, max_tokens=6),
                GenerationRequest("Find x such that", n=2, seed=3, max_tokens=6),
            ]
        )
    finally:
        handle.remove()
    tok = random_gen.tokenizer
    widest = max(len(tok(p)["input_ids"]) for p in ("Find x such that", "What is 2 + 3?"))
    # one prefill over the 2 distinct prompts, then one token per step for the (at most 9)
    # unfinished samples of all requests together
    assert calls[0] == (2, widest)
    assert all(shape[1] == 1 and shape[0] <= 9 for shape in calls[1:])
    assert len(calls) <= 6
    assert [len(r.completions) for r in results] == [4, 3, 2]


# --------------------------------------------------------------------------- loading, templates


def test_from_path_matches_from_model(
    trained_gen: Any, tiny_trained_policy: Any, tiny_trained_policy_dir: Any
) -> None:
    from rstar_math.generators import HFGenerator

    gen = HFGenerator(tiny_trained_policy_dir, device="cpu", dtype="float32")
    prompt, _, _ = tiny_trained_policy.problems[Q_MUL]
    req = GenerationRequest(prompt, n=3, stop=STOP_MARKERS, seed=9, max_tokens=40)
    assert gen.generate([req]) == trained_gen.generate([req])
    assert str(gen.device) == "cpu"


def test_chat_template_wraps_the_prompt(tiny_policy: Any, tiny_tokenizer: Any) -> None:
    from rstar_math.generators import HFGenerator

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>:\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>:{% endif %}"
    )
    chat = HFGenerator.from_model(tiny_policy, tok, chat_template=True, system_prompt="Be brief.")
    plain = HFGenerator.from_model(tiny_policy, tok, add_special_tokens=False)
    rendered = "<|system|>:\nBe brief.\n<|user|>:\nWhat is 2 + 3?\n<|assistant|>:"
    (a,) = chat.generate([greedy("What is 2 + 3?", max_tokens=8)])
    (b,) = plain.generate([greedy(rendered, max_tokens=8)])
    assert a == b
    assert a.prompt_tokens == len(tok(rendered, add_special_tokens=False)["input_ids"])
    with pytest.raises(ValueError, match="chat_template"):
        HFGenerator.from_model(tiny_policy, tiny_tokenizer, chat_template=True)


def test_rejects_bad_arguments(tiny_policy: Any, tiny_tokenizer: Any) -> None:
    from rstar_math.generators import HFGenerator

    with pytest.raises(ValueError, match="tokenizer"):
        HFGenerator(tiny_policy)
    with pytest.raises(ValueError, match="max_batch_size"):
        HFGenerator.from_model(tiny_policy, tiny_tokenizer, max_batch_size=0)
    with pytest.raises(TypeError):
        HFGenerator.from_model("some/path", tiny_tokenizer)
    gen = HFGenerator.from_model(tiny_policy, tiny_tokenizer)
    assert gen.generate([]) == []
    too_long = "x " * (tiny_policy.config.max_position_embeddings + 10)
    with pytest.raises(ValueError, match="context"):
        gen.generate([GenerationRequest(too_long)])


def test_decoding_uses_no_deprecated_transformers_argument(trained_gen: Any) -> None:
    """transformers 5.25 renamed the forward's ``past_key_values`` to ``cache`` and warns on the
    old name (removal is announced for 5.40): decoding must pass the name the installed release
    takes, so that it keeps working when the old one goes."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        (result,) = trained_gen.generate([greedy(Q_ADD, max_tokens=8)])
    assert len(result.completions) == 1 and result.completions[0].text
