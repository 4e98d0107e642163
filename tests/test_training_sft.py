"""Policy SFT trainer on a tiny model: prompt masking, markers, packing, held-out loss, resume."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

pytestmark = pytest.mark.hf

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from rstar_math.format import SPECIAL_MARKERS, PromptTemplate  # noqa: E402
from rstar_math.models.tiny import build_tiny_model, build_tiny_tokenizer, save_tiny_model  # noqa: E402
from rstar_math.training import (  # noqa: E402
    SFTRecord,
    SFTTrainingConfig,
    train_sft,
    train_sft_from_files,
)
from rstar_math.training.sft_trainer import (  # noqa: E402
    IGNORE_INDEX,
    _collate,
    add_step_markers,
    encode_sft_example,
    pack_examples,
    sft_loss_sum,
)

PROMPT = PromptTemplate.sft()


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny models train fastest on one thread, and far faster on a shared, busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def solution(a: int, b: int) -> str:
    return (
        f"<code>\n# Step 1: add the numbers\nx = {a} + {b}\n<end_of_step>\n"
        f"# Now print the final answer\nprint(x)\n<end_of_code>\n<output>{a + b}<end_of_output>\n"
        f"<answer>The answer is \\boxed{{{a + b}}}.<end_of_answer>"
    )


def records(n: int, seed: int) -> list[SFTRecord]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        out.append(SFTRecord(f"What is {a} + {b}?", solution(a, b)))
    return out


@pytest.fixture(scope="module")
def tok():
    corpus = [PROMPT.render(r.question) + r.response for r in records(100, 0)]
    return build_tiny_tokenizer(corpus, vocab_size=400)


@pytest.fixture
def model(tok):
    torch.manual_seed(0)
    return build_tiny_model(tok, hidden_size=32, num_layers=2)


def cfg(tmp_path, **kw) -> SFTTrainingConfig:
    base = dict(
        output_dir=str(tmp_path / "sft"),
        learning_rate=3e-3,
        max_steps=20,
        batch_size=4,
        device="cpu",
        progress=False,
        max_length=256,
        warmup_steps=2,
        log_every=0,
    )
    base.update(kw)
    return SFTTrainingConfig(**base)


def test_encoding_masks_the_prompt(tok):
    prompt = PROMPT.render("What is 1 + 2?")
    ex = encode_sft_example(tok, prompt, solution(1, 2), max_length=256)
    n_prompt = len(tok(prompt)["input_ids"])
    assert ex["prompt_len"] == [n_prompt]
    assert ex["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    assert ex["input_ids"][-1] == tok.eos_token_id  # EOS appended and learned
    assert tok.decode(ex["input_ids"][n_prompt:-1]) == solution(1, 2)
    # truncation keeps the prompt; a prompt that fills max_length gives no example
    short = encode_sft_example(tok, prompt, solution(1, 2), max_length=n_prompt + 3)
    assert len(short["input_ids"]) == n_prompt + 3
    assert encode_sft_example(tok, prompt, "x", max_length=n_prompt) is None


def test_encoding_can_learn_the_prompt_too(tok):
    prompt = PROMPT.render("What is 1 + 2?")
    plain = encode_sft_example(tok, prompt, solution(1, 2), max_length=256)
    ex = encode_sft_example(tok, prompt, solution(1, 2), max_length=256, train_on_prompt=True)
    assert ex["input_ids"] == plain["input_ids"] and ex["prompt_len"] == plain["prompt_len"]
    assert ex["labels"] == [IGNORE_INDEX, *ex["input_ids"][1:]]  # only the first token is free


def _prompt_loss(model, tok, recs) -> float:
    """Mean loss of ``model`` on the prompt tokens of ``recs`` (responses masked)."""
    items = []
    for r in recs:
        ex = encode_sft_example(tok, PROMPT.render(r.question), r.response, 256, True)
        p = ex["prompt_len"][0]
        ex["labels"] = ex["labels"][:p] + [IGNORE_INDEX] * (len(ex["labels"]) - p)
        items.append(ex)
    model.eval()
    with torch.no_grad():
        loss, n = sft_loss_sum(model, _collate(items, tok.pad_token_id, "cpu"))
    return float(loss) / n


def test_sft_on_prompt_learns_the_questions_and_still_the_responses(tmp_path, tok):
    held_out = records(8, 6)
    losses = {}
    for on_prompt in (False, True):
        torch.manual_seed(0)
        model = build_tiny_model(tok, hidden_size=32, num_layers=2)
        res = train_sft(
            model,
            records(64, 5),
            cfg(tmp_path / str(on_prompt), max_steps=40, train_on_prompt=on_prompt),
            eval_records=held_out,
            tokenizer=tok,
        )
        losses[on_prompt] = (_prompt_loss(res.model, tok, held_out), res.final_eval_loss)
        assert res.final_eval_loss < 0.7 * res.initial_eval_loss  # responses are learned
    # only the model trained on the prompts has learned to predict them
    assert losses[True][0] < 0.8 * losses[False][0], losses


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_prompt_carries_no_loss(tok, model):
    """The gradient ignores the prompt's targets; it would not if masking were broken."""
    recs = records(3, 1)
    items = [
        encode_sft_example(tok, PROMPT.render(r.question), r.response, max_length=256) for r in recs
    ]
    batch = _collate(items, tok.pad_token_id, "cpu")
    model.train()

    # 1. gradient of the loss w.r.t. the logits is exactly zero on every position whose next
    #    token is a prompt token, and nonzero on the response positions
    captured = {}

    def keep(_module, _inp, out):
        out.retain_grad()
        captured["logits"] = out

    handle = model.lm_head.register_forward_hook(keep)
    loss, n_tokens = sft_loss_sum(model, batch)
    loss.backward()
    handle.remove()
    g = captured["logits"].grad
    for i, it in enumerate(items):
        p = it["prompt_len"][0]
        assert torch.all(g[i, : p - 1] == 0), "a prompt target received gradient"
        assert torch.all(g[i, p - 1 : len(it["input_ids"]) - 1].abs().sum(-1) > 0)
        assert torch.all(g[i, len(it["input_ids"]) - 1 :] == 0)  # last token and padding
    assert n_tokens == sum(len(it["input_ids"]) - it["prompt_len"][0] for it in items)
    model.zero_grad()

    # 2. changing the prompt-region labels (to other token ids, then masking them again as the
    #    trainer does) leaves every parameter gradient unchanged ...
    def grads_with(labels):
        model.zero_grad()
        loss, _ = sft_loss_sum(model, {**batch, "labels": labels})
        loss.backward()
        return _grads(model)

    ref = grads_with(batch["labels"])
    scrambled = batch["labels"].clone()
    for i, it in enumerate(items):
        p = it["prompt_len"][0]
        scrambled[i, :p] = torch.randint(0, len(tok), (p,))
    remasked = scrambled.clone()
    for i, it in enumerate(items):
        remasked[i, : it["prompt_len"][0]] = IGNORE_INDEX
    same = grads_with(remasked)
    assert all(torch.equal(ref[k], same[k]) for k in ref)
    # ... while feeding those prompt labels unmasked (broken masking) changes them
    broken = grads_with(scrambled)
    assert any(not torch.allclose(ref[k], broken[k]) for k in ref)

    # 3. the loss is the response-only cross-entropy computed by hand
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        total = 0.0
        for i, it in enumerate(items):
            p, n = it["prompt_len"][0], len(it["input_ids"])
            targets = torch.tensor(it["input_ids"][p:n])
            total += float(
                torch.nn.functional.cross_entropy(
                    logits[i, p - 1 : n - 1], targets, reduction="sum"
                )
            )
    assert float(loss.detach()) == pytest.approx(total, rel=1e-5)


def test_markers_added_when_missing(tmp_path):
    corpus = [PROMPT.render(r.question) + r.response for r in records(30, 2)]
    bare = build_tiny_tokenizer(corpus, vocab_size=300, special_tokens=[])
    assert len(bare.encode("<end_of_step>", add_special_tokens=False)) > 1
    m = build_tiny_model(bare, hidden_size=32, num_layers=1)
    n_before = m.get_input_embeddings().weight.shape[0]
    added = add_step_markers(bare, m)
    assert added == list(SPECIAL_MARKERS)
    assert m.get_input_embeddings().weight.shape[0] == len(bare) == n_before + len(added)
    for marker in SPECIAL_MARKERS:
        assert len(bare.encode(marker, add_special_tokens=False)) == 1
    assert add_step_markers(bare, m) == []  # idempotent

    res = train_sft(
        m, records(8, 3), cfg(tmp_path, max_steps=2), tokenizer=bare
    )  # trains with the grown vocabulary and saves it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok2 = AutoTokenizer.from_pretrained(res.model_dir)
    assert len(tok2.encode("<end_of_answer>", add_special_tokens=False)) == 1
    loaded = AutoModelForCausalLM.from_pretrained(res.model_dir)
    assert loaded.get_input_embeddings().weight.shape[0] == len(tok2)


def test_packing_isolates_examples(tok, model):
    items = [
        encode_sft_example(tok, PROMPT.render(r.question), r.response, max_length=256)
        for r in records(5, 4)
    ]
    block = 2 * max(len(it["input_ids"]) for it in items) + 3
    blocks = pack_examples(items, block, tok.pad_token_id)
    assert len(blocks) < len(items)
    assert all(len(b["input_ids"]) == block for b in blocks)
    model.eval()
    with torch.no_grad():
        packed, n_packed = sft_loss_sum(model, _collate(blocks, tok.pad_token_id, "cpu"))
        separate, n_sep = 0.0, 0
        for it in items:
            loss, n = sft_loss_sum(model, _collate([it], tok.pad_token_id, "cpu"))
            separate += float(loss)
            n_sep += n
    # same targets, same losses: no example attends to (or learns from) another
    assert n_packed == n_sep
    assert float(packed) == pytest.approx(separate, abs=2e-3)  # cross-talk: ~2e-2


@pytest.mark.slow
def test_sft_lowers_held_out_loss_and_saves_a_policy(tmp_path, tok, model):
    res = train_sft(
        model,
        records(64, 5),
        cfg(tmp_path, max_steps=40, eval_every=20),
        eval_records=records(8, 6),
        tokenizer=tok,
    )
    losses = [e["loss"] for e in res.eval_history]
    assert [e["step"] for e in res.eval_history] == [0, 20, 40]
    assert losses[0] > losses[1] > losses[2], losses
    assert losses[-1] < 0.7 * losses[0], losses
    assert res.global_step == 40 and len(res.train_history) == 40
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(res.model_dir)
    tok2 = AutoTokenizer.from_pretrained(res.model_dir)
    assert loaded.get_input_embeddings().weight.shape[0] == len(tok2)
    sd, sd2 = res.model.state_dict(), loaded.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd2)


@pytest.mark.slow
def test_sft_packed_training_runs(tmp_path, tok, model):
    res = train_sft(
        model,
        records(32, 7),
        cfg(tmp_path, max_steps=15, packing=True, max_length=200, batch_size=2),
        eval_records=records(4, 8),
        tokenizer=tok,
    )
    assert res.final_eval_loss < res.initial_eval_loss


def test_length_grouping_cuts_padding_and_keeps_every_example_once():
    import random

    from rstar_math.training._loop import BatchPlan

    rng = random.Random(0)
    lengths = [rng.choice([rng.randint(100, 160), rng.randint(250, 700)]) for _ in range(2000)]

    def padded(plan: BatchPlan, epoch: int) -> int:
        micro = [m for group in plan.epoch_groups(epoch) for m in group]
        assert sorted(i for m in micro for i in m) == list(range(2000))  # each item once
        assert all(len(m) <= 8 for m in micro)
        return sum(len(m) * max(lengths[i] for i in m) for m in micro)

    plain = BatchPlan(2000, 8, 2, seed=3)
    grouped = BatchPlan(2000, 8, 2, seed=3, lengths=lengths)
    assert padded(grouped, 0) < 0.8 * padded(plain, 0)
    assert sum(lengths) / padded(grouped, 0) > 0.9
    # deterministic per (seed, epoch), so a resumed run sees the same batches; epochs differ
    again = BatchPlan(2000, 8, 2, seed=3, lengths=lengths)
    assert again.epoch_groups(1) == grouped.epoch_groups(1) != grouped.epoch_groups(0)
    assert grouped.step_group(grouped.steps_per_epoch + 2) == grouped.epoch_groups(1)[2]
    # batches are not served short-to-long within an epoch
    firsts = [lengths[g[0][0]] for g in grouped.epoch_groups(0)]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)
    with pytest.raises(ValueError, match="lengths has 3 entries for 2000 items"):
        BatchPlan(2000, 8, 1, seed=0, lengths=[1, 2, 3])


def test_sft_with_length_grouping_trains(tmp_path, tok, model):
    res = train_sft(
        model,
        records(48, 10),
        cfg(tmp_path, max_steps=24, group_by_length=True, batch_size=4),
        eval_records=records(8, 11),
        tokenizer=tok,
    )
    assert res.global_step == 24
    assert res.final_eval_loss < 0.8 * res.initial_eval_loss


def test_sft_resume_reproduces_an_uninterrupted_run(tmp_path, tok):
    import shutil

    data = records(24, 9)
    torch.manual_seed(0)
    full = train_sft(
        build_tiny_model(tok, hidden_size=32, num_layers=1),
        data,
        cfg(tmp_path / "a", max_steps=6, save_every=3, grad_accum_steps=2, batch_size=2),
        tokenizer=tok,
    )
    # an interrupted run: only the step-3 checkpoint made it to disk
    out_b = tmp_path / "b" / "sft"
    out_b.mkdir(parents=True)
    shutil.copytree(full.output_dir / "checkpoint-000003", out_b / "checkpoint-000003")
    resumed = train_sft(
        build_tiny_model(tok, hidden_size=32, num_layers=1, seed=123),  # ignored: resumes
        data,
        cfg(tmp_path / "b", max_steps=6, save_every=3, grad_accum_steps=2, batch_size=2),
        tokenizer=tok,
    )
    assert resumed.global_step == 6
    assert [h["loss"] for h in resumed.train_history] == pytest.approx(
        [h["loss"] for h in full.train_history], rel=1e-6
    )
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)


DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rstar"


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} not present")
def test_train_sft_from_reference_file(tmp_path, tok):
    policy = save_tiny_model(
        build_tiny_model(tok, hidden_size=32, num_layers=1), tok, tmp_path / "policy"
    )
    res = train_sft_from_files(
        DATA / "sft_data_examples.json",
        policy,
        tmp_path / "out",
        {"max_steps": 2, "batch_size": 3, "device": "cpu", "progress": False},
        reference_format=True,
        eval_fraction=0.25,
        max_length=384,
    )
    assert res.global_step == 2 and [e["step"] for e in res.eval_history] == [0, 2]
    assert (tmp_path / "out" / "final" / "config.json").is_file()
