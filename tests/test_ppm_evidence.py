"""Token-evidence PPMs: the reward adds the log-probabilities of the last step's own tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.hf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rstar_math.format import PromptTemplate  # noqa: E402
from rstar_math.interfaces import ScoreRequest  # noqa: E402
from rstar_math.scorers.ppm import (  # noqa: E402
    PPMConfig,
    PPMInput,
    PPMModel,
    PPMScorer,
    ppm_encode,
    ppm_input,
    ppm_text,
)
from rstar_math.training import (  # noqa: E402
    PPMTrainingConfig,
    PreferencePair,
    evaluate_pairs,
    train_ppm,
)

from .conftest import TINY_PROBLEMS  # noqa: E402

SFT = PromptTemplate.sft()
QUESTION = TINY_PROBLEMS[0][0]
RIGHT = "<code>\n# Step 1: Add the numbers\nx = 2 + 3\n<end_of_step>"
WRONG = "<code>\n# Step 1: Add the numbers\nx = 2 + 7\n<end_of_step>"
FINAL = "\n\n# Now print the final answer\nprint(x)\n<end_of_code>\n<output>5<end_of_output>\n"


def _causal_step_logprobs(lm: Any, tok: Any, context: str, step: str) -> list[float]:
    """Log-probabilities of the tokens ``step`` adds to ``context`` (boundary by tokens, as
    the PPM does), from the causal LM itself."""
    ctx = tok(context)["input_ids"]
    full = tok(context + step)["input_ids"]
    start = next((i for i, (a, b) in enumerate(zip(ctx, full, strict=False)) if a != b), len(ctx))
    ids = torch.tensor([full])
    with torch.no_grad():
        logprobs = lm(ids).logits[0, :-1].float().log_softmax(-1)
    return [float(logprobs[t - 1, full[t]]) for t in range(start, len(full))]


def _evidence_ppm(policy: Any, tok: Any, **kwargs: Any) -> PPMModel:
    return PPMModel.from_policy(
        policy, tok, evidence=("min_logprob", "mean_logprob"), **kwargs
    ).eval()


def test_features_are_the_policy_log_probabilities_of_the_last_step(
    tiny_trained_policy: Any,
) -> None:
    """A fresh evidence PPM's reward is min + mean log-probability (both weights start at 1) of
    the last step's tokens under the policy it was built from; the value head starts at zero."""
    lm, tok = tiny_trained_policy.model, tiny_trained_policy.tokenizer
    ppm = _evidence_ppm(lm, tok)
    items = [ppm_input(SFT, QUESTION, (RIGHT,)), ppm_input(SFT, QUESTION, (RIGHT, FINAL[:40]))]
    with torch.no_grad():
        out = ppm(**ppm_encode(tok, items, evidence=True))
    for k, item in enumerate(items):
        expected = _causal_step_logprobs(lm, tok, item.context, item.step)
        assert expected, "the step adds tokens"
        want = [min(expected), sum(expected) / len(expected)]
        assert out.evidence[k].tolist() == pytest.approx(want, abs=1e-4)
        assert float(out.rewards[k]) == pytest.approx(sum(want), abs=1e-4)


def test_the_written_step_outranks_a_miscopied_one_before_any_training(
    tiny_trained_policy: Any,
) -> None:
    """What an evidence PPM adds: the policy's own knowledge that ``2 + 7`` is not what this
    question says, which a fresh value head (every value 0) cannot tell."""
    ppm = _evidence_ppm(tiny_trained_policy.model, tiny_trained_policy.tokenizer)
    scorer = PPMScorer(ppm, prompt=SFT)
    right, wrong, empty = scorer.score(
        [ScoreRequest(QUESTION, (RIGHT,)), ScoreRequest(QUESTION, (WRONG,)), ScoreRequest(QUESTION)]
    )
    assert right > wrong
    assert empty == 0.0  # no step, no evidence, zero value head
    assert all(-1.0 <= v <= 1.0 for v in (right, wrong, empty))
    plain = PPMScorer(
        PPMModel.from_policy(tiny_trained_policy.model, tiny_trained_policy.tokenizer), prompt=SFT
    )
    assert plain.score([ScoreRequest(QUESTION, (RIGHT,)), ScoreRequest(QUESTION, (WRONG,))]) == [
        0.0,
        0.0,
    ]


def test_solution_features_read_every_step_and_judge_the_whole_path(
    tiny_trained_policy: Any,
) -> None:
    """``solution_*`` features are over every step's own tokens (each given the steps before
    it). After a miscopied first step the same final step scores lower by them, while the last
    step's own features barely move: what a final answer's value needs to pick the answer."""
    lm, tok = tiny_trained_policy.model, tiny_trained_policy.tokenizer
    ppm = PPMModel.from_policy(
        lm,
        tok,
        evidence=("min_logprob", "solution_min_logprob", "solution_mean_logprob"),
    ).eval()
    prompt = SFT.render(QUESTION)
    items = [PPMInput(prompt, (RIGHT, FINAL)), PPMInput(prompt, (WRONG, FINAL))]
    with torch.no_grad():
        out = ppm(**ppm_encode(tok, items, evidence=True))
    for k, item in enumerate(items):
        own_final = FINAL.split("<output>")[0]
        first = _causal_step_logprobs(lm, tok, prompt, item.steps[0])
        last = _causal_step_logprobs(lm, tok, item.context, own_final)
        every = first + last
        want = [min(last), min(every), sum(every) / len(every)]
        assert out.evidence[k].tolist() == pytest.approx(want, abs=1e-4)
    right, wrong = out.evidence.tolist()
    assert right[1] > wrong[1] + 1.0  # the miscopied number is a very unlikely token
    assert out.rewards[0] > out.rewards[1]


def test_the_executor_output_is_not_evidence(tiny_trained_policy: Any) -> None:
    """The ``<output>`` block is the executor's, not the policy's writing: changing it leaves
    the evidence unchanged."""
    ppm = _evidence_ppm(tiny_trained_policy.model, tiny_trained_policy.tokenizer)
    odd = FINAL.replace("<output>5<", "<output>987654<")
    items = [ppm_input(SFT, QUESTION, (RIGHT, FINAL)), ppm_input(SFT, QUESTION, (RIGHT, odd))]
    with torch.no_grad():
        out = ppm(**ppm_encode(tiny_trained_policy.tokenizer, items, evidence=True))
    assert torch.allclose(out.evidence[0], out.evidence[1], atol=1e-5)
    assert out.evidence[0].abs().sum() > 0


def test_values_do_not_depend_on_batch_padding_or_truncation_side(
    tiny_trained_policy: Any,
) -> None:
    tok = tiny_trained_policy.tokenizer
    ppm = _evidence_ppm(tiny_trained_policy.model, tok)
    requests = [
        ScoreRequest(QUESTION, ()),
        ScoreRequest(QUESTION, (RIGHT,)),
        ScoreRequest(QUESTION, (RIGHT, FINAL)),
        ScoreRequest("What is 9 minus 4?", (WRONG,)),
    ]
    alone = [PPMScorer(ppm, prompt=SFT, batch_size=1).score([r])[0] for r in requests]
    for side in ("left", "right"):
        batched = PPMScorer(ppm, prompt=SFT, batch_size=4, padding_side=side).score(requests)
        assert batched == pytest.approx(alone, abs=1e-5)
    # truncated from the left, the evidence keeps marking the same tokens (the output block
    # after them is not evidence); a cut inside the step leaves the first kept token out, as
    # nothing predicts it
    item = ppm_input(SFT, QUESTION, (RIGHT, FINAL))
    mask = ppm_encode(tok, [item], evidence=True)["evidence_mask"][0]
    width, start = mask.shape[0], int(mask.nonzero()[0, 0])
    assert not bool(mask[-3:].any())  # the <output> block
    for keep in (width - start + 3, width - start - 2):
        cut = ppm_encode(tok, [item], evidence=True, max_length=keep)["evidence_mask"][0]
        want = mask[width - keep :].clone()
        want[0] = 0
        assert torch.equal(cut, want)


def test_checkpoint_round_trip_and_its_refusals(tiny_trained_policy: Any, tmp_path: Path) -> None:
    tok = tiny_trained_policy.tokenizer
    ppm = _evidence_ppm(tiny_trained_policy.model, tok, evidence_init=0.5)
    with torch.no_grad():
        ppm.value_head.weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
    requests = [ScoreRequest(QUESTION, (RIGHT,)), ScoreRequest(QUESTION, (WRONG, FINAL))]
    before = PPMScorer(ppm, prompt=SFT).score(requests)
    path = ppm.save_pretrained(tmp_path / "ppm", prompt=SFT)
    saved = json.loads((path / "ppm_config.json").read_text())
    assert saved["evidence"] == ["min_logprob", "mean_logprob"]
    assert saved["format_version"] == 2
    assert (path / "ppm_evidence.safetensors").is_file()
    loaded = PPMScorer.from_pretrained(path, device="cpu")
    assert loaded.model.evidence == ("min_logprob", "mean_logprob")
    assert loaded.model.evidence_head.weight.tolist() == [[0.5, 0.5]]
    assert loaded.score(requests) == pytest.approx(before, abs=1e-6)

    # bare texts do not say where the last step begins
    with pytest.raises(ValueError, match="score_inputs"):
        loaded.score_texts([ppm_text(SFT, QUESTION, (RIGHT,))])
    with pytest.raises(TypeError, match="PPMInput"):
        ppm_encode(tok, [ppm_text(SFT, QUESTION, (RIGHT,))], evidence=True)
    enc = ppm_encode(tok, [ppm_input(SFT, QUESTION, (RIGHT,))], evidence=True)
    with pytest.raises(ValueError, match="evidence_mask"):
        loaded.model(enc["input_ids"], enc["attention_mask"])
    # an incomplete checkpoint and a newer format are refused, not half-loaded
    (path / "ppm_evidence.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"ppm_evidence\.safetensors"):
        PPMModel.from_pretrained(path)
    saved["format_version"] = 3
    (path / "ppm_config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="format_version 3"):
        PPMModel.from_pretrained(path)


def test_a_plain_ppm_checkpoint_stays_format_version_1(
    tiny_trained_policy: Any, tmp_path: Path
) -> None:
    path = PPMModel.from_policy(tiny_trained_policy.model, tiny_trained_policy.tokenizer)
    saved = json.loads((path.save_pretrained(tmp_path / "plain") / "ppm_config.json").read_text())
    assert saved["format_version"] == 1 and saved["evidence"] == []
    assert not (tmp_path / "plain" / "ppm_evidence.safetensors").exists()


@pytest.mark.parametrize(
    "evidence", [("max_logprob",), ("min_logprob", "min_logprob"), "min_logprob"]
)
def test_unknown_or_repeated_features_are_refused(evidence: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="evidence"):
        PPMConfig(evidence=evidence)


def test_an_untied_lm_head_is_copied_and_saved(tiny_tokenizer: Any, tmp_path: Path) -> None:
    """A backbone whose LM head is its own matrix: the PPM keeps a copy, saves and reloads it,
    and its evidence is that head's log-probabilities."""
    tok = tiny_tokenizer
    config = transformers.Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    lm = transformers.Qwen2ForCausalLM(config).eval()
    assert not torch.equal(lm.lm_head.weight, lm.get_input_embeddings().weight)
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    for source in (lm, tmp_path / "lm"):
        ppm = PPMModel.from_policy(source, tok, evidence=("mean_logprob",)).eval()
        assert torch.equal(ppm.lm_head.weight, lm.lm_head.weight)
        assert ppm.lm_head.weight.data_ptr() != lm.lm_head.weight.data_ptr()
    item = ppm_input(SFT, QUESTION, (RIGHT,))
    with torch.no_grad():
        got = float(ppm(**ppm_encode(tok, [item], evidence=True)).evidence[0, 0])
    expected = _causal_step_logprobs(lm, tok, item.context, item.step)
    assert got == pytest.approx(sum(expected) / len(expected), abs=1e-4)
    path = ppm.save_pretrained(tmp_path / "ppm")
    reloaded = PPMModel.from_pretrained(path)
    assert torch.equal(reloaded.lm_head.weight, lm.lm_head.weight)
    with pytest.raises(ValueError, match="lm_head"):
        PPMModel(reloaded.model, reloaded.ppm_config, tok)


def _step_pairs(n: int) -> list[PreferencePair]:
    """The written first step above one with a miscopied number, across the tiny problems."""
    pairs = []
    for question, solution, _ in TINY_PROBLEMS[:n]:
        first = solution.split("<end_of_step>")[0] + "<end_of_step>"
        digits = [c for c in first if c.isdigit()]
        if not digits:
            continue
        d = digits[-1]
        wrong = first[::-1].replace(d, str((int(d) + 3) % 10), 1)[::-1]
        pairs.append(PreferencePair(question, [], [first], [wrong], "step"))
    return pairs


def test_training_moves_the_evidence_weights_and_the_scorer_reproduces_accuracy(
    tiny_trained_policy_dir: Path, tmp_path: Path
) -> None:
    """train_ppm with ``evidence`` builds the evidence PPM from the policy, trains all of it
    with the Bradley-Terry loss, and the saved checkpoint scores as the trainer measured."""
    pairs = _step_pairs(len(TINY_PROBLEMS))
    assert len(pairs) >= 2
    cfg = PPMTrainingConfig(
        output_dir=str(tmp_path / "out"),
        learning_rate=1e-2,
        max_steps=6,
        batch_size=2,
        evidence=("min_logprob", "mean_logprob"),
        evidence_init=1.0,
        eval_batch_size=3,
        progress=False,
        device="cpu",
        max_length=512,
    )
    res = train_ppm(str(tiny_trained_policy_dir), pairs, cfg, eval_pairs=pairs, prompt=SFT)
    assert res.initial_accuracy == 1.0  # the policy's own likelihood already ranks them
    weights = res.model.evidence_head.weight.detach().flatten().tolist()
    assert weights != [1.0, 1.0]
    scorer = PPMScorer.from_pretrained(res.model_dir, batch_size=3, device="cpu")
    again = evaluate_pairs(scorer.model, pairs, batch_size=3)
    assert again["accuracy"] == res.final_accuracy
    # an existing evidence PPM keeps its features; asking for others is refused
    with pytest.raises(ValueError, match="already has evidence"):
        train_ppm(
            res.model_dir,
            pairs,
            PPMTrainingConfig(
                output_dir=str(tmp_path / "again"), evidence=("min_logprob",), device="cpu"
            ),
        )


def test_inputs_split_where_the_last_step_begins() -> None:
    item = ppm_input(SFT, QUESTION, (RIGHT, FINAL))
    assert item == PPMInput(SFT.render(QUESTION), (RIGHT, FINAL))
    assert (item.context, item.step) == (SFT.render(QUESTION) + RIGHT, FINAL)
    assert item.text == ppm_text(SFT, QUESTION, (RIGHT, FINAL))
    assert ppm_input(SFT, QUESTION, ()) == PPMInput(SFT.render(QUESTION))
    assert ppm_input(SFT, QUESTION, ()).step == ""
    with pytest.raises(TypeError, match="not one str"):
        ppm_input(SFT, QUESTION, RIGHT)
    # a step kept as a list (as pair files store alternatives) is named, not an unhashable error
    with pytest.raises(TypeError, match=r"steps\[1\] must be a str, got list"):
        PPMInput(SFT.render(QUESTION), (RIGHT, [FINAL]))
    with pytest.raises(TypeError, match="prompt must be a str, got NoneType"):
        PPMInput(None, (RIGHT,))  # type: ignore[arg-type]
    assert PPMInput("p", [RIGHT]).steps == (RIGHT,)  # any sequence of str is kept as a tuple
