"""The process preference model and its scorer on real tiny models (CPU, float32)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from rstar_math.format import PromptTemplate
from rstar_math.interfaces import Scorer, ScoreRequest

pytestmark = pytest.mark.hf

QUESTION = "What is 4 times 6?"
STEPS = (
    "<code>\n# Step 1: Multiply the numbers\ny = 4 * 6\n<end_of_step>",
    "\n\n# Step 2: Double check\nz = y\n<end_of_step>",
    "\n\n# Now print the final answer\nprint(z)\n<end_of_code>\n<output>24<end_of_output>\n",
    "<answer>The product is \\boxed{24}.<end_of_answer>",
)
#: requests of very different lengths (padding matters)
REQUESTS = (
    ScoreRequest(QUESTION, ()),
    ScoreRequest(QUESTION, STEPS[:1]),
    ScoreRequest(QUESTION, STEPS),
    ScoreRequest("What is 2 + 3?", ("<code>\nx = 2 + 3\n<end_of_step>",)),
    ScoreRequest("Find x such that 2x + 3 = 11.", STEPS[:3]),
)


@pytest.fixture(scope="module")
def ppm(tiny_trained_policy: Any) -> Any:
    """A PPM from the trained policy with a random (non-zero) head, so values vary."""
    torch = pytest.importorskip("torch")
    from rstar_math.scorers import PPMModel

    model = PPMModel.from_policy(
        tiny_trained_policy.model, tiny_trained_policy.tokenizer, scale=0.5
    )
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        model.value_head.weight.copy_(
            0.02 * torch.randn(model.value_head.weight.shape, generator=gen)
        )
    return model.eval()


def _max_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_scorer_satisfies_protocol(ppm: Any) -> None:
    from rstar_math.scorers import PPMScorer

    scorer = PPMScorer(ppm, batch_size=4)
    assert isinstance(scorer, Scorer)
    assert scorer.score([]) == []


def test_from_policy_copies_the_backbone(tiny_trained_policy: Any) -> None:
    torch = pytest.importorskip("torch")
    from rstar_math.scorers import PPMModel

    policy = tiny_trained_policy.model
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    model = PPMModel.from_policy(policy, tiny_trained_policy.tokenizer)
    body = policy.base_model.state_dict()
    ours = model.backbone.state_dict()
    assert set(body) == set(ours)
    for name, tensor in body.items():
        assert torch.equal(tensor, ours[name]), name
        assert tensor.data_ptr() != ours[name].data_ptr(), f"{name} shares storage"
    # head: Linear(hidden, 1) without bias, starting at zero -> every value 0
    head = model.value_head
    assert tuple(head.weight.shape) == (1, policy.config.hidden_size) and head.bias is None
    assert torch.count_nonzero(head.weight) == 0
    enc = model.encode(["some text", "x = 1"])
    out = model(**enc)
    assert torch.equal(out.rewards, torch.zeros(2)) and torch.equal(out.values, torch.zeros(2))
    # training the PPM never touches the policy
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    for name, tensor in policy.state_dict().items():
        assert torch.equal(tensor, before[name])


def test_from_policy_path(tiny_trained_policy: Any, tiny_trained_policy_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    from rstar_math.scorers import PPMModel

    model = PPMModel.from_policy(tiny_trained_policy_dir, scale=2.0, dtype=torch.float32)
    assert model.scale == 2.0
    assert model.tokenizer is not None
    body = tiny_trained_policy.model.base_model.state_dict()
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, body[name]), name
    assert torch.count_nonzero(model.value_head.weight) == 0


def test_values_are_tanh_of_rewards_over_scale(ppm: Any) -> None:
    torch = pytest.importorskip("torch")
    from rstar_math.scorers import squash_reward

    enc = ppm.encode(["a", "b c d", "<code>\nx = 1\n<end_of_step>"])
    with torch.no_grad():
        out = ppm(**enc)
    assert torch.allclose(out.values, torch.tanh(out.rewards / 0.5))
    assert torch.equal(out.values, ppm.squash(out.rewards))
    assert torch.equal(out.values, squash_reward(out.rewards, ppm.scale))
    assert out.rewards.dtype == torch.float32 and out.rewards.shape == (3,)
    # saturated heads still give values in [-1, 1]
    big = copy.deepcopy(ppm)
    with torch.no_grad():
        big.value_head.weight.mul_(1e4)
        values = big(**enc).values
    assert bool(((values >= -1) & (values <= 1)).all())
    assert values.abs().max().item() == pytest.approx(1.0)


def test_scores_do_not_depend_on_batch_or_padding(ppm: Any) -> None:
    from rstar_math.scorers import PPMScorer

    reference = [PPMScorer(ppm, batch_size=1).score([r])[0] for r in REQUESTS]
    assert all(-1 <= v <= 1 for v in reference)
    assert len({round(v, 3) for v in reference}) == len(REQUESTS)  # distinct values
    assert max(abs(v) for v in reference) < 0.99  # not saturated: the 1e-5 checks mean something
    for side in ("left", "right"):
        for batch_size in (1, 2, 3, 16):
            scorer = PPMScorer(ppm, batch_size=batch_size, padding_side=side)
            assert _max_diff(scorer.score(REQUESTS), reference) < 1e-5, (side, batch_size)
            shuffled = [REQUESTS[i] for i in (3, 0, 4, 2, 1)]
            got = scorer.score(shuffled)
            assert _max_diff(got, [reference[i] for i in (3, 0, 4, 2, 1)]) < 1e-5
    # duplicates inside one call and mixing with other texts
    scorer = PPMScorer(ppm, batch_size=2, padding_side="left")
    got = scorer.score([REQUESTS[2], REQUESTS[0], REQUESTS[2]])
    assert _max_diff(got, [reference[2], reference[0], reference[2]]) < 1e-5


def test_forward_is_padding_side_invariant(ppm: Any) -> None:
    torch = pytest.importorskip("torch")
    texts = ["a much longer text with many tokens <code>\nx = 1\n<end_of_step>", "x"]
    with torch.no_grad():
        left = ppm(**ppm.encode(texts, padding_side="left")).rewards
        right = ppm(**ppm.encode(texts, padding_side="right")).rewards
        alone = torch.cat([ppm(**ppm.encode([t])).rewards for t in texts])
    assert torch.allclose(left, alone, atol=1e-5, rtol=0)
    assert torch.allclose(right, alone, atol=1e-5, rtol=0)


def test_scorer_scores_prompt_plus_steps(ppm: Any) -> None:
    from rstar_math.scorers import PPMScorer, ppm_text

    prompt = PromptTemplate.sft()
    scorer = PPMScorer(ppm, prompt=prompt)
    req = REQUESTS[2]
    text = ppm_text(prompt, req.question, req.steps)
    assert text == prompt.render(QUESTION) + "".join(STEPS)
    assert scorer.texts([req]) == [text]
    assert scorer.score([req]) == scorer.score_texts([text])
    with pytest.raises(TypeError):
        ppm_text(prompt, QUESTION, "not a tuple")


def test_encode_is_per_text_and_truncates_from_the_left(ppm: Any) -> None:
    from rstar_math.scorers import ppm_encode

    tok = ppm.tokenizer
    texts = ["short", "a longer text, with more tokens"]
    full = [tok(t)["input_ids"] for t in texts]
    for side in ("left", "right"):
        enc = ppm_encode(tok, texts, padding_side=side)
        for row, mask, ids in zip(enc["input_ids"], enc["attention_mask"], full, strict=True):
            assert row[mask.bool()].tolist() == ids
    enc = ppm_encode(tok, texts, max_length=3)
    assert enc["input_ids"].shape == (2, 3)
    assert enc["input_ids"][1].tolist() == full[1][-3:]


def test_save_and_load_round_trip(ppm: Any, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForSequenceClassification

    from rstar_math.scorers import PPMModel, PPMScorer

    template = PromptTemplate.sft()
    ppm.save_pretrained(tmp_path / "ppm", prompt=template)
    files = {p.name for p in (tmp_path / "ppm").iterdir()}
    assert {"config.json", "model.safetensors", "ppm_config.json", "tokenizer.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)
    recorded = json.loads((tmp_path / "ppm" / "ppm_config.json").read_text())
    assert recorded["scale"] == 0.5 and recorded["squash"] == "tanh"
    assert recorded["head"] == "linear" and recorded["head_bias"] is False
    hf_config = json.loads((tmp_path / "ppm" / "config.json").read_text())
    assert len(hf_config["id2label"]) == 1  # num_labels == 1
    assert hf_config["architectures"] == ["Qwen2ForSequenceClassification"]

    loaded = PPMModel.from_pretrained(tmp_path / "ppm", dtype=torch.float32)
    assert loaded.scale == 0.5
    for name, tensor in ppm.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    before = PPMScorer(ppm, prompt=template, batch_size=3).score(REQUESTS)
    scorer = PPMScorer.from_pretrained(tmp_path / "ppm", batch_size=2, device="cpu")
    assert scorer.prompt == template
    assert _max_diff(scorer.score(REQUESTS), before) < 1e-6

    # the directory is also a plain transformers sequence-classification checkpoint
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ppm", dtype=torch.float32)
    enc = ppm.encode(["<code>\nx = 1\n<end_of_step>"])
    with torch.no_grad():
        raw = hf(**enc).logits.squeeze(-1)
        ours = ppm(**enc)
    assert torch.allclose(raw, ours.rewards, atol=1e-5)
    assert math.isclose(math.tanh(raw.item() / 0.5), ours.values.item(), abs_tol=1e-5)


def test_from_pretrained_rejects_a_policy_directory(tiny_trained_policy_dir: Path) -> None:
    from rstar_math.scorers import PPMConfig, PPMModel

    with pytest.raises(FileNotFoundError, match="from_policy"):
        PPMModel.from_pretrained(tiny_trained_policy_dir)
    with pytest.raises(ValueError, match="scale"):
        PPMConfig(scale=0.0)
