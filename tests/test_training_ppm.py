"""PPM pairwise training on a tiny model: loss, batching, learning a real signal, checkpoints."""

from __future__ import annotations

import math
import random
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.hf

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from rstar_math.format import PromptTemplate  # noqa: E402
from rstar_math.interfaces import ScoreRequest  # noqa: E402
from rstar_math.models.tiny import build_tiny_model, build_tiny_tokenizer, save_tiny_model  # noqa: E402
from rstar_math.scorers.ppm import PPMModel, PPMScorer, ppm_encode, ppm_text  # noqa: E402
from rstar_math.training import (  # noqa: E402
    PPMTrainingConfig,
    PreferencePair,
    evaluate_pairs,
    train_ppm,
    train_ppm_from_files,
    write_jsonl,
)
from rstar_math.training.ppm_trainer import _build_batch, bradley_terry_loss  # noqa: E402

#: a short prompt keeps the tiny model's sequences short (the trainer records it in the checkpoint)
PROMPT = PromptTemplate(suffix="Q: {question}\n")


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny models train fastest on one thread, and far faster on a shared, busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def step(a: int, b: int, claimed: int) -> str:
    """A final code step that adds two numbers and shows a claimed program output."""
    return f"x={a}+{b}\nprint(x)<end_of_code><output>{claimed}<end_of_output>"


def arithmetic_pairs(n: int, seed: int) -> list[PreferencePair]:
    """Positives show the correct sum, negatives two wrong ones: learnable only by adding."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 4), rng.randint(0, 4)
        wrong = rng.sample([c for c in range(9) if c != a + b], 2)
        out.append(
            PreferencePair(f"{a}+{b}", [], [step(a, b, a + b)], [step(a, b, c) for c in wrong])
        )
    return out


@pytest.fixture(scope="module")
def tok():
    corpus = [PROMPT.render(p.question) + p.pos[0] for p in arithmetic_pairs(300, 0)]
    return build_tiny_tokenizer(corpus, vocab_size=400)


def config(tmp_path, **kw) -> PPMTrainingConfig:
    base = dict(
        output_dir=str(tmp_path / "ppm"),
        learning_rate=3e-3,
        max_steps=10,
        batch_size=8,
        device="cpu",
        progress=False,
        max_length=128,
        warmup_steps=10,
        log_every=0,
    )
    base.update(kw)
    return PPMTrainingConfig(**base)


def scorer_accuracy(scorer: PPMScorer, pairs: list[PreferencePair]) -> tuple[float, list[float]]:
    """Pair accuracy (ties half) from values scored through the public Scorer interface."""
    requests = [
        ScoreRequest(p.question, (*p.prefix_steps, c)) for p in pairs for c in (*p.pos, *p.neg)
    ]
    values = iter(scorer.score(requests))
    right = combos = 0.0
    flat = []
    for p in pairs:
        pos = [next(values) for _ in p.pos]
        neg = [next(values) for _ in p.neg]
        flat += pos + neg
        for vp in pos:
            for vn in neg:
                combos += 1
                right += 1.0 if vp > vn else 0.5 if vp == vn else 0.0
    return right / combos, flat


# --------------------------------------------------------------------------- loss and batching


def test_bradley_terry_loss_per_node():
    rewards = torch.tensor([2.0, -1.0, 0.5, 0.0, 3.0])
    # node 0: pos {0} x neg {1, 2}; node 1: pos {3, 4} x neg {1}
    pos = torch.tensor([0, 0, 3, 4])
    neg = torch.tensor([1, 2, 1, 1])
    node = torch.tensor([0, 0, 1, 1])
    loss = bradley_terry_loss(rewards, pos, neg, node, torch.tensor([2.0, 2.0]))

    def bt(d: float) -> float:
        return -math.log(1 / (1 + math.exp(-d)))

    assert loss.tolist() == pytest.approx(
        [(bt(3.0) + bt(1.5)) / 2, (bt(1.0) + bt(4.0)) / 2], rel=1e-6
    )


def test_batch_encodes_each_distinct_text_once():
    shared = "\nprint(1)<end_of_code>"
    pairs = [
        PreferencePair("q", ["<code>\nx=1<end_of_step>"], ["A", shared], ["B"]),
        PreferencePair("q", ["<code>\nx=1<end_of_step>"], [shared], ["C", "B"]),
        PreferencePair("r", [], ["A"], ["B"], level="answer"),
    ]
    batch = _build_batch(pairs, PROMPT)
    prefix = PROMPT.render("q") + "<code>\nx=1<end_of_step>"
    assert [i.text for i in batch.inputs] == [
        prefix + "A",
        prefix + shared,
        prefix + "B",
        prefix + "C",
        PROMPT.render("r") + "A",
        PROMPT.render("r") + "B",
    ]
    assert batch.inputs[0].text == ppm_text(PROMPT, "q", [*pairs[0].prefix_steps, "A"])
    assert batch.pos_idx.tolist() == [0, 1, 1, 1, 4]
    assert batch.neg_idx.tolist() == [2, 2, 3, 2, 5]
    assert batch.node_idx.tolist() == [0, 0, 1, 1, 2]
    assert batch.combos_per_node.tolist() == [2.0, 2.0, 1.0]


def test_training_loss_matches_per_text_forward(tok):
    """The batched pair forward gives the rewards of scoring each text on its own."""
    torch.manual_seed(0)
    ppm = PPMModel.from_policy(build_tiny_model(tok, hidden_size=32), tok, head_init_std=0.5)
    ppm.eval()
    pairs = arithmetic_pairs(4, 1)
    batch = _build_batch(pairs, PROMPT)
    with torch.no_grad():
        rewards = ppm(**ppm_encode(tok, batch.inputs)).rewards
        alone = torch.stack([ppm(**ppm_encode(tok, [t])).rewards[0] for t in batch.inputs])
        assert torch.allclose(rewards, alone, atol=1e-5)
        per_node = bradley_terry_loss(
            rewards, batch.pos_idx, batch.neg_idx, batch.node_idx, batch.combos_per_node
        )
    ev = evaluate_pairs(ppm, pairs, prompt=PROMPT)
    assert ev["loss"] == pytest.approx(float(per_node.mean()), rel=1e-5)
    assert ev["combos"] == 8 and ev["pairs"] == 4


# --------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_ppm_learns_arithmetic_and_scorer_reproduces_accuracy(tmp_path, tok):
    train, held_out = arithmetic_pairs(2000, 10), arithmetic_pairs(100, 11)
    # scale 10: values tanh(r / 10) stay clear of float32 saturation (tanh(r) == 1.0 for r > 9,
    # which turns well-separated pairs into ties)
    cfg = config(
        tmp_path,
        learning_rate=2e-3,
        batch_size=16,
        max_steps=500,
        scale=10.0,
        eval_every=250,
        save_every=250,
        eval_batch_size=32,
    )
    res = train_ppm(
        build_tiny_model(tok, hidden_size=128, num_layers=2),
        train,
        cfg,
        eval_pairs=held_out,
        tokenizer=tok,
        prompt=PROMPT,
    )
    steps = [e["step"] for e in res.eval_history]
    acc = [e["accuracy"] for e in res.eval_history]
    assert steps == [0, 250, 500]
    assert acc[0] == 0.5  # a fresh (zero) value head ties every pair
    assert acc[-1] >= 0.9, res.eval_history
    assert res.eval_history[-1]["loss"] < 0.4

    # the saved PPM, loaded by the scorer, reproduces the trainer's held-out accuracy exactly
    scorer = PPMScorer.from_pretrained(res.model_dir, batch_size=cfg.eval_batch_size)
    assert scorer.prompt == PROMPT  # recorded in the checkpoint
    sc_acc, values = scorer_accuracy(scorer, held_out)
    assert sc_acc == acc[-1]
    assert all(-1.0 <= v <= 1.0 for v in values)

    # the intermediate checkpoint is a scorer-loadable PPM too
    mid = PPMScorer.from_pretrained(res.output_dir / "checkpoint-000250", batch_size=32)
    assert scorer_accuracy(mid, held_out)[0] == acc[1]


# --------------------------------------------------------------------------- files, resume


def test_resume_reproduces_an_uninterrupted_run(tmp_path, tok):
    pairs = arithmetic_pairs(40, 20)
    kw = dict(max_steps=6, save_every=3, batch_size=4, grad_accum_steps=2, lr_scheduler="linear")
    torch.manual_seed(0)
    full = train_ppm(
        build_tiny_model(tok, hidden_size=32, num_layers=1),
        pairs,
        config(tmp_path / "a", **kw),
        tokenizer=tok,
        prompt=PROMPT,
    )
    out_b = tmp_path / "b" / "ppm"
    out_b.mkdir(parents=True)
    shutil.copytree(full.output_dir / "checkpoint-000003", out_b / "checkpoint-000003")
    resumed = train_ppm(
        build_tiny_model(tok, hidden_size=32, num_layers=1, seed=7),  # ignored: resumes
        pairs,
        config(tmp_path / "b", **kw),
        tokenizer=tok,
        prompt=PROMPT,
    )
    assert resumed.global_step == 6
    assert [h["loss"] for h in resumed.train_history] == pytest.approx(
        [h["loss"] for h in full.train_history], rel=1e-6
    )
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)


def test_train_from_files_with_config_file(tmp_path, tok):
    policy = save_tiny_model(
        build_tiny_model(tok, hidden_size=32, num_layers=1), tok, tmp_path / "p"
    )
    write_jsonl(tmp_path / "pairs.jsonl", arithmetic_pairs(12, 30))
    write_jsonl(tmp_path / "eval.jsonl", arithmetic_pairs(4, 31))
    (tmp_path / "ppm.json").write_text(
        '{"max_steps": 3, "batch_size": 4, "device": "cpu", "progress": false, "scale": 5.0}'
    )
    res = train_ppm_from_files(
        tmp_path / "pairs.jsonl",
        policy,
        tmp_path / "out",
        tmp_path / "ppm.json",
        eval_jsonl=tmp_path / "eval.jsonl",
        learning_rate=1e-3,
    )
    assert res.global_step == 3 and res.model_dir == tmp_path / "out" / "final"
    assert [e["step"] for e in res.eval_history] == [0, 3]
    loaded = PPMModel.from_pretrained(res.model_dir)
    assert loaded.scale == 5.0 and loaded.ppm_config.max_length == 2048
    assert loaded.ppm_config.prompt() == PromptTemplate.sft()
    with pytest.raises(ValueError, match="'lerning_rate'"):
        train_ppm_from_files(tmp_path / "pairs.jsonl", policy, tmp_path / "o2", {"lerning_rate": 1})
    # continuing from a PPM directory keeps its head
    again = train_ppm(res.model_dir, arithmetic_pairs(4, 32), config(tmp_path / "c", max_steps=1))
    assert again.model.scale == 5.0


DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rstar"


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} not present")
def test_train_ppm_from_reference_file(tmp_path, tok):
    policy = save_tiny_model(
        build_tiny_model(tok, hidden_size=32, num_layers=1), tok, tmp_path / "policy"
    )
    res = train_ppm_from_files(
        DATA / "rm_data_examples.json",
        policy,
        tmp_path / "out",
        {"max_steps": 2, "batch_size": 2, "device": "cpu", "progress": False},
        reference_format=True,
        eval_fraction=0.4,
        max_length=384,
    )
    assert res.global_step == 2
    assert [e["step"] for e in res.eval_history] == [0, 2]
    assert res.eval_history[0]["pairs"] == 2
    scorer = PPMScorer.from_pretrained(res.model_dir)
    assert scorer.max_length == 384
