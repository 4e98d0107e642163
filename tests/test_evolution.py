"""Self-evolution rounds end to end, resume after SIGKILL, datasets, evaluation and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rstar_math.data import DatasetError, load_problems
from rstar_math.evolution import (
    EvolutionConfig,
    EvolutionRunner,
    SolverSpec,
    evaluate,
    generate_trees,
    read_problem_records,
)
from rstar_math.search.config import SearchConfig
from tests.support.policies import noisy_arithmetic, problems_jsonl

REPO = Path(__file__).resolve().parents[1]
FACTORY = "tests.support.policies:noisy_arithmetic"


@pytest.fixture(scope="module")
def base_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained Qwen2 with the format's markers: the model SFT starts from."""
    pytest.importorskip("torch")
    from rstar_math.format import PromptTemplate
    from rstar_math.models.tiny import build_tiny_model, build_tiny_tokenizer, save_tiny_model
    from tests.support.policies import arithmetic_script

    corpus = []
    for a in range(3, 30):
        q = f"What is {a} plus {a + 7}?"
        corpus.append(
            PromptTemplate.sft().render(q) + "\n".join(_script_texts(arithmetic_script, q))
        )
    tok = build_tiny_tokenizer(corpus, vocab_size=320)
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
    return save_tiny_model(model, tok, tmp_path_factory.mktemp("base") / "policy")


def _script_texts(script: Any, question: str) -> list[str]:
    from rstar_math.interfaces import GenerationRequest

    return list(script(GenerationRequest(prompt=f"What is {question}")))


def evolve_config(problems: Path, base: Path, sft_steps: int = 6) -> dict[str, Any]:
    search = {"num_rollouts": 4, "num_candidates": 3, "unvisited": "inf", "max_depth": 4}
    train = {
        "max_steps": sft_steps,
        "batch_size": 2,
        "learning_rate": 1e-3,
        "device": "cpu",
        "save_every": 2,
        "progress": False,
    }
    return {
        "problems": str(problems),
        "base_policy": str(base),
        "backend": "factory",
        "device": "cpu",
        "chunk_size": 2,
        "show_progress": False,
        "generator_kwargs": {},
        "rounds": [
            {"search": search, "policy": FACTORY, "sft": train, "ppm": train},
            {"search": search, "policy": FACTORY, "use_ppm": True, "sft": train, "ppm": train},
        ],
    }


@pytest.mark.hf
@pytest.mark.slow
@pytest.mark.sandbox
def test_two_rounds_end_to_end(tmp_path: Path, base_policy: Path) -> None:
    problems = tmp_path / "problems.jsonl"
    problems_jsonl(problems, n=4)
    config = EvolutionConfig.from_dict(evolve_config(problems, base_policy))
    runner = EvolutionRunner(config, tmp_path / "run")
    assert runner.final_policy() == str(base_policy) and runner.final_ppm() is None
    manifest = runner.run()

    run = tmp_path / "run"
    # what a run ships: the last round's policy and PPM
    assert runner.final_policy() == str(run / "round_2" / "policy" / "final")
    assert runner.final_ppm() == str(run / "round_2" / "ppm" / "final")
    on_disk = json.loads((run / "manifest.json").read_text())
    assert on_disk["rounds"].keys() == manifest["rounds"].keys() == {"round_1", "round_2"}
    for name in ("round_1", "round_2"):
        rdir = run / name
        stages = on_disk["rounds"][name]["stages"]
        assert set(stages) == {"generate", "generate_extra", "extract", "train_sft", "train_ppm"}
        records = list(read_problem_records(rdir / "trees.jsonl"))
        assert sorted(r.problem_id for r in records) == ["p0", "p1", "p2", "p3"]
        assert all(r.correct for r in records)
        for record in records:
            (tree,) = record.trees
            assert tree.meta["problem_id"] == record.problem_id
            grades = {n.grade for n in tree.terminals()}
            assert grades == {True, False}  # the add branch and the wrong branches
        sft = [json.loads(line) for line in (rdir / "sft.jsonl").read_text().splitlines()]
        pairs = [json.loads(line) for line in (rdir / "pairs.jsonl").read_text().splitlines()]
        assert len(sft) == stages["extract"]["sft_records"] == 4  # one correct path per problem
        assert all("+" in r["response"] and "\\boxed{" in r["response"] for r in sft)
        assert len(pairs) == stages["extract"]["pairs"] > 0
        assert (rdir / "policy" / "final" / "config.json").is_file()
        assert (rdir / "ppm" / "final" / "ppm_config.json").is_file()
        assert stages["train_sft"]["steps"] == 6 and stages["train_ppm"]["steps"] == 6
    # round 2 was guided by round 1's PPM: its nodes carry PPM values
    assert on_disk["rounds"]["round_2"]["ppm_used"].endswith("round_1/ppm/final")
    (tree,) = next(read_problem_records(run / "round_2" / "trees.jsonl")).trees
    assert all(n.ppm_value is not None for n in tree.nodes[1:])
    # the trained checkpoints load through the public classes
    from rstar_math.generators import HFGenerator
    from rstar_math.scorers import PPMScorer

    HFGenerator(str(run / "round_2" / "policy" / "final"), device="cpu")
    scorer = PPMScorer.from_pretrained(str(run / "round_2" / "ppm" / "final"))
    assert len(scorer.score_texts(["What is 1 plus 2?"])) == 1

    # running again is a no-op: nothing is redone
    before = (run / "round_1" / "trees.jsonl").read_bytes()
    EvolutionRunner(config, run).run()
    assert (run / "round_1" / "trees.jsonl").read_bytes() == before


@pytest.mark.hf
@pytest.mark.slow
def test_round_sft_mixes_in_earlier_data(tmp_path: Path, base_policy: Path) -> None:
    from rstar_math.training import SFTRecord, write_jsonl

    problems = tmp_path / "problems.jsonl"
    problems_jsonl(problems, n=3)
    extra = tmp_path / "bootstrap.jsonl"
    write_jsonl(extra, [SFTRecord(question=f"q{i}", response=f"r{i}") for i in range(5)])
    data = evolve_config(problems, base_policy, sft_steps=2)
    data["rounds"] = data["rounds"][:1]
    data["rounds"][0].update(train_ppm=False, sft_mix=[str(extra)])
    manifest = EvolutionRunner(EvolutionConfig.from_dict(data), tmp_path / "run").run()
    stages = manifest["rounds"]["round_1"]["stages"]
    # the round's own 3 correct trajectories plus the 5 mixed-in records
    assert stages["extract"]["sft_records"] == 3 and stages["train_sft"]["records"] == 8

    data["rounds"][0]["sft_mix"] = [str(tmp_path / "missing.jsonl")]
    with pytest.raises(FileNotFoundError, match=r"round_1: sft_mix file not found: .*missing"):
        EvolutionRunner(EvolutionConfig.from_dict(data), tmp_path / "run2").run()
    assert not (tmp_path / "run2" / "round_1" / "trees.jsonl").exists()  # found before searching
    data["rounds"][0]["sft_mix"] = str(extra)
    with pytest.raises(ValueError, match="sft_mix must be a list"):
        EvolutionConfig.from_dict(data)


@pytest.mark.hf
@pytest.mark.slow
def test_round_ppm_mixes_in_earlier_pairs(tmp_path: Path, base_policy: Path) -> None:
    from rstar_math.training import PreferencePair, write_jsonl

    problems = tmp_path / "problems.jsonl"
    problems_jsonl(problems, n=3)
    extra = tmp_path / "earlier_pairs.jsonl"
    write_jsonl(
        extra,
        [PreferencePair(question=f"q{i}", prefix_steps=[], pos=["a"], neg=["b"]) for i in range(5)],
    )
    data = evolve_config(problems, base_policy, sft_steps=2)
    data["rounds"] = data["rounds"][:1]
    data["rounds"][0]["ppm_mix"] = [str(extra)]
    manifest = EvolutionRunner(EvolutionConfig.from_dict(data), tmp_path / "run").run()
    stages = manifest["rounds"]["round_1"]["stages"]
    own = stages["extract"]["pairs"]
    assert own > 0 and stages["train_ppm"]["pairs"] == own + 5

    data["rounds"][0]["ppm_mix"] = [str(tmp_path / "missing.jsonl")]
    with pytest.raises(FileNotFoundError, match=r"round_1: ppm_mix file not found: .*missing"):
        EvolutionRunner(EvolutionConfig.from_dict(data), tmp_path / "run2").run()
    assert not (tmp_path / "run2" / "round_1" / "trees.jsonl").exists()
    data["rounds"][0]["ppm_mix"] = str(extra)
    with pytest.raises(ValueError, match="ppm_mix must be a list"):
        EvolutionConfig.from_dict(data)


@pytest.mark.hf
@pytest.mark.slow
def test_round_ppm_init_starts_the_ppm_from_another_lm(tmp_path: Path, base_policy: Path) -> None:
    """``ppm_init``: the round's PPM starts from a larger LM with the policy's tokenizer (here
    with token evidence), not from the policy."""
    from transformers import AutoTokenizer

    from rstar_math.models.tiny import build_tiny_model, save_tiny_model

    tok = AutoTokenizer.from_pretrained(base_policy)
    judge_lm = save_tiny_model(
        build_tiny_model(tok, hidden_size=48, num_layers=1, num_heads=2, num_kv_heads=1),
        tok,
        tmp_path / "judge_lm",
    )
    problems = tmp_path / "problems.jsonl"
    problems_jsonl(problems, n=3)
    data = evolve_config(problems, base_policy, sft_steps=2)
    data["rounds"] = data["rounds"][:1]
    data["rounds"][0]["ppm_init"] = str(judge_lm)
    data["rounds"][0]["ppm"] = {**data["rounds"][0]["ppm"], "evidence": ["min_logprob"]}
    runner = EvolutionRunner(EvolutionConfig.from_dict(data), tmp_path / "run")
    manifest = runner.run()
    stages = manifest["rounds"]["round_1"]["stages"]
    assert stages["extract"]["pairs"] > 0
    assert stages["train_ppm"]["initialised_from"] == str(judge_lm)
    ppm_dir = Path(runner.final_ppm())
    assert json.loads((ppm_dir / "config.json").read_text())["hidden_size"] == 48
    assert json.loads((ppm_dir / "ppm_config.json").read_text())["evidence"] == ["min_logprob"]
    # the policy still trains from the base policy (hidden size 32)
    policy_dir = Path(runner.final_policy())
    assert json.loads((policy_dir / "config.json").read_text())["hidden_size"] == 32

    data["rounds"][0]["ppm_init"] = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"round_1: ppm_init is not a model directory"):
        EvolutionRunner(EvolutionConfig.from_dict(data), tmp_path / "run2").run()
    assert not (tmp_path / "run2" / "round_1" / "trees.jsonl").exists()  # found before searching


@pytest.mark.hf
@pytest.mark.slow
@pytest.mark.sandbox
def test_acceptance_check_measures_the_trained_policy_for_real(
    tmp_path: Path, base_policy: Path
) -> None:
    problems = tmp_path / "problems.jsonl"
    problems_jsonl(problems, n=3)
    validation = tmp_path / "validation.jsonl"
    problems_jsonl(validation, n=2)
    data = evolve_config(problems, base_policy, sft_steps=2)
    data["rounds"] = data["rounds"][:1]
    data["rounds"][0]["acceptance"] = ["greedy", "mcts"]
    data["validation"] = str(validation)
    runner = EvolutionRunner(EvolutionConfig.from_dict(data), tmp_path / "run")
    manifest = runner.run()

    accept = manifest["rounds"]["round_1"]["stages"]["accept"]
    run = tmp_path / "run" / "round_1"
    assert accept["candidate"] == str(run / "policy" / "final")
    assert accept["incumbent"] == str(base_policy)  # the policy the run would continue with
    assert accept["problems"] == 2 and set(accept["methods"]) == {"greedy", "mcts"}
    for method, acc in accept["methods"].items():
        for who in ("candidate", "incumbent"):
            # each policy really solved every validation problem, graded per row
            rows = [
                json.loads(line)
                for line in (run / "accept" / f"{who}_{method}.jsonl").read_text().splitlines()
            ]
            assert sorted(r["problem_id"] for r in rows) == ["p0", "p1"]
            assert all(r["tokens"] > 0 for r in rows)
            assert acc[who] == pytest.approx(
                sum(next(iter(r["answers"]["majority"].values()))["correct"] for r in rows) / 2
            )
    kept = all(a["candidate"] >= a["incumbent"] for a in accept["methods"].values())
    assert accept["accepted"] == kept
    expected = accept["candidate"] if kept else str(base_policy)
    assert runner.final_policy() == expected
    assert manifest["rounds"]["round_1"]["stages"]["train_ppm"]["initialised_from"] == expected


@pytest.mark.hf
@pytest.mark.slow
def test_a_rejected_policy_is_not_continued_from(
    tmp_path: Path, base_policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check's measurements are its neighbour here (fixed accuracies), its decision is not."""
    problems = tmp_path / "problems.jsonl"
    problems_jsonl(problems, n=3)
    validation = tmp_path / "validation.jsonl"
    problems_jsonl(validation, n=2)
    data = evolve_config(problems, base_policy, sft_steps=2)
    for rnd in data["rounds"]:
        rnd["acceptance"] = ["greedy"]
    data["rounds"][1]["use_ppm"] = False
    data["validation"] = str(validation)
    run = tmp_path / "run"
    accuracy = {
        str(base_policy): 0.5,
        str(run / "round_1" / "policy" / "final"): 0.25,  # worse than the base: rejected
        str(run / "round_2" / "policy" / "final"): 0.5,  # a tie is kept
    }
    measured: list[str] = []

    def fixed(self: Any, index: int, policy: str, method: str, results: Path) -> float:
        measured.append(policy)
        return accuracy[policy]

    monkeypatch.setattr(EvolutionRunner, "_accuracy", fixed)
    runner = EvolutionRunner(EvolutionConfig.from_dict(data), run)
    manifest = runner.run()

    r1, r2 = (manifest["rounds"][f"round_{i}"]["stages"] for i in (1, 2))
    assert r1["accept"]["accepted"] is False and r2["accept"]["accepted"] is True
    # round 2 was measured against the base policy, not round 1's rejected one
    assert r2["accept"]["incumbent"] == str(base_policy)
    assert runner.kept_policy(0) is None
    assert runner.final_policy() == str(run / "round_2" / "policy" / "final")
    # the rejected round's PPM starts from the policy the run continues with
    assert r1["train_ppm"]["initialised_from"] == str(base_policy)
    assert (run / "round_1" / "policy" / "final" / "config.json").is_file()  # kept on disk

    # resuming does not measure again: the decision is in the manifest
    measured.clear()
    EvolutionRunner(EvolutionConfig.from_dict(data), run).run()
    assert measured == []


def test_acceptance_config_errors(tmp_path: Path) -> None:
    data = evolve_config(tmp_path / "p.jsonl", tmp_path / "base")
    data["rounds"][1]["acceptance"] = ["greedy"]
    with pytest.raises(ValueError, match=r"rounds \[2\] have an acceptance check .* validation"):
        EvolutionConfig.from_dict(data)
    data["validation"] = str(tmp_path / "v.jsonl")
    data["rounds"][1]["acceptance"] = ["beam"]
    with pytest.raises(ValueError, match="acceptance methods must be among"):
        EvolutionConfig.from_dict(data)
    data["rounds"][1]["acceptance"] = "greedy"
    with pytest.raises(ValueError, match="acceptance must be a list"):
        EvolutionConfig.from_dict(data)


def _evolve_cmd(config: Path, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rstar_math.cli",
        "evolve",
        "--config",
        str(config),
        "--run-dir",
        str(run_dir),
        "--no-progress",
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _kill_when(cmd: list[str], ready: Any, timeout: float = 240.0) -> None:
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(
                    f"run ended before the kill point (rc={proc.returncode}):\n{out}"
                )
            if time.monotonic() > deadline:
                raise AssertionError("kill point never reached")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _trees_by_problem(path: Path) -> dict[str, list[dict[str, Any]]]:
    return {r.problem_id: [t.to_dict() for t in r.trees] for r in read_problem_records(path)}


@pytest.mark.hf
@pytest.mark.slow
@pytest.mark.sandbox
def test_sigkill_in_generation_and_training_then_resume(tmp_path: Path, base_policy: Path) -> None:
    problems = tmp_path / "problems.jsonl"
    problems_jsonl(problems, n=6)
    data = evolve_config(problems, base_policy, sft_steps=40)
    data["rounds"] = data["rounds"][:1]
    data["generator_kwargs"] = {"latency_s": 0.2}  # slow enough to be caught mid-generation
    data["chunk_size"] = 1
    config = tmp_path / "evolve.json"
    config.write_text(json.dumps(data))

    reference = tmp_path / "uninterrupted"
    done = subprocess.run(
        _evolve_cmd(config, reference), env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr

    run = tmp_path / "killed"
    trees = run / "round_1" / "trees.jsonl"
    _kill_when(_evolve_cmd(config, run), lambda: 2 <= _lines(trees) < 6)
    partial = _lines(trees)
    assert 2 <= partial < 6
    ckpt_root = run / "round_1" / "policy"
    _kill_when(
        _evolve_cmd(config, run),
        lambda: (
            ckpt_root.exists()
            and any(p.name.startswith("checkpoint-") for p in ckpt_root.iterdir())
        ),
    )
    manifest = json.loads((run / "manifest.json").read_text())
    assert "train_sft" not in manifest["rounds"]["round_1"]["stages"]
    resumed = subprocess.run(_evolve_cmd(config, run), env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    # every problem exactly once, trees identical to the uninterrupted run's
    ids = [json.loads(line)["problem_id"] for line in trees.read_text().splitlines()]
    assert sorted(ids) == [f"p{i}" for i in range(6)] and len(ids) == len(set(ids))
    assert _trees_by_problem(trees) == _trees_by_problem(reference / "round_1" / "trees.jsonl")
    for name in ("sft.jsonl", "pairs.jsonl"):
        got = sorted((run / "round_1" / name).read_text().splitlines())
        want = sorted((reference / "round_1" / name).read_text().splitlines())
        assert got == want
    final = json.loads((run / "manifest.json").read_text())["rounds"]["round_1"]["stages"]
    assert final["train_sft"]["steps"] == 40
    _assert_same_weights(
        run / "round_1" / "policy" / "final", reference / "round_1" / "policy" / "final"
    )


def _assert_same_weights(a: Path, b: Path) -> None:
    import torch
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- generation, eval


@pytest.mark.sandbox
def test_generate_trees_resumes_without_redoing_or_duplicating(tmp_path: Path) -> None:
    problems_jsonl(tmp_path / "p.jsonl", n=5)
    problems = load_problems(tmp_path / "p.jsonl")
    spec = SolverSpec(
        policy=FACTORY,
        backend="factory",
        search=SearchConfig(num_rollouts=3, num_candidates=3, unvisited="inf"),
    )
    out = tmp_path / "trees.jsonl"
    with spec.build() as solver:
        assert generate_trees(solver, problems[:2], out, chunk_size=2, show_progress=False) == 2
    # a crash mid-write leaves half a line behind
    with out.open("a") as fh:
        fh.write('{"problem_id": "p2", "trees": [')
    with spec.build() as solver:
        assert generate_trees(solver, problems, out, chunk_size=2, show_progress=False) == 3
        assert generate_trees(solver, problems, out, chunk_size=2, show_progress=False) == 0
    ids = [json.loads(line)["problem_id"] for line in out.read_text().splitlines()]
    assert ids == ["p0", "p1", "p2", "p3", "p4"]


@pytest.mark.sandbox
def test_evaluate_reports_accuracy_per_rule_and_k(tmp_path: Path) -> None:
    problems_jsonl(tmp_path / "p.jsonl", n=3)
    problems = load_problems(tmp_path / "p.jsonl")
    config = SearchConfig(
        algorithm="best_of_n", num_samples=3, answer_selection="majority", temperature=1.0
    )
    from rstar_math import MCTSSolver
    from rstar_math.generators.scripted import ScriptedGenerator
    from tests.support.policies import arithmetic_script

    def rotating(request: Any) -> list[str]:
        # sample i of a root expansion proposes candidate (seed % 3): add, subtract, multiply
        options = arithmetic_script(request)
        return [options[(request.seed or 0) % len(options)]]

    with MCTSSolver(ScriptedGenerator(rotating), config=config) as solver:
        report = evaluate(
            solver, problems, ks=(1, 3), results_path=tmp_path / "res.jsonl", show_progress=False
        )
    rows = [json.loads(line) for line in (tmp_path / "res.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["trajectories"] == 3 for r in rows)
    for method in ("best", "majority", "weighted_majority"):
        for k in (1, 3):
            expected = sum(r["answers"][method][str(k)]["correct"] for r in rows) / 3
            assert report.accuracy[method][k] == pytest.approx(expected)
    assert "| majority |" in report.table() and report.tokens_per_problem > 0


def test_noisy_policy_factory_is_deterministic() -> None:
    gen = noisy_arithmetic()
    from rstar_math.interfaces import GenerationRequest

    (res,) = gen.generate([GenerationRequest("What is 2 plus 3?", n=3, stop=("<end_of_step>",))])
    assert [c.text.splitlines()[-1] for c in res.completions] == [
        "result = 2 + 3",
        "result = 2 - 3",
        "result = 2 * 3",
    ]


# --------------------------------------------------------------------------- datasets


DATA = REPO.parent / "shared" / "data" / "rstar"


@pytest.mark.skipif(not DATA.is_dir(), reason="shared/data/rstar is absent")
def test_reference_json_sets_load() -> None:
    math500 = load_problems(DATA / "math500_test.json")
    gsm = load_problems(DATA / "GSM8K_test.json")
    assert len(math500) == 500 and len(gsm) == 1319
    assert all(p.question and p.answer is not None for p in math500 + gsm)
    assert len({p.id for p in math500}) == 500


def test_jsonl_loaders_and_errors(tmp_path: Path) -> None:
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(
        json.dumps({"question": "q1", "answer": "work\n#### 1,234"})
        + "\n"
        + json.dumps({"question": "q2", "answer": "so\n#### 7"})
        + "\n"
    )
    assert [p.answer for p in load_problems(gsm)] == ["1234", "7"]
    math = tmp_path / "math.jsonl"
    math.write_text(json.dumps({"problem": "p", "solution": "so \\boxed{\\frac{1}{2}}."}) + "\n")
    assert load_problems(math)[0].answer == "\\frac{1}{2}"
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"question": "ok", "answer": "1"}\n{"question": "", "answer": "2"}\n')
    with pytest.raises(DatasetError, match=r"plain.jsonl, line 2: field 'question' is empty"):
        load_problems(plain)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "ok", "answer": "1"}\n{"answer": "2"}\n')
    with pytest.raises(DatasetError, match=r"broken.jsonl, line 2: missing the field 'question'"):
        load_problems(broken)
    bad_gsm = tmp_path / "bad.jsonl"
    bad_gsm.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n" + "{oops\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl, line 2: invalid JSON"):
        load_problems(bad_gsm, fmt="gsm8k")
    records = load_problems([{"question": "a", "answer": 1}, {"question": "b"}])
    assert [(p.id, p.answer) for p in records] == [("0", "1"), ("1", None)]
    with pytest.raises(DatasetError, match=r"records\[0\]: missing the field 'question'"):
        load_problems([{"q": "a"}])


# --------------------------------------------------------------------------- CLI


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rstar_math.cli", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "command", ["solve", "eval", "generate", "ref-pairs", "train-sft", "train-ppm", "evolve"]
)
def test_cli_help(command: str) -> None:
    res = _cli(command, "--help")
    assert res.returncode == 0 and "usage: rstar-math " + command in res.stdout


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    res = _cli("solve", "What is 1 plus 2?", "--policy", str(tmp_path / "missing"))
    assert res.returncode == 2 and "policy model not found" in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"problems": "x", "base_policy": "y", "rounds": [{}], "roundz": 1}))
    res = _cli("evolve", "--config", str(bad), "--run-dir", str(tmp_path / "run"))
    assert res.returncode == 2 and "unknown evolution key(s): 'roundz'" in res.stderr
    res = _cli()
    assert res.returncode == 2
    res = _cli(
        "ref-pairs", str(bad), "--model", str(tmp_path / "missing"), "--output", str(bad) + ".out"
    )
    assert res.returncode == 2 and "policy model not found" in res.stderr
    typo = tmp_path / "ref.json"
    typo.write_text(json.dumps({"sample": 3}))
    res = _cli(
        "ref-pairs", str(bad), "--model", str(tmp_path), "--output", "x", "--config", str(typo)
    )
    assert res.returncode == 2 and "unknown ReferencePairsConfig key(s): 'sample'" in res.stderr


@pytest.mark.sandbox
def test_cli_generate_with_a_factory_policy(tmp_path: Path) -> None:
    problems_jsonl(tmp_path / "p.jsonl", n=2)
    out = tmp_path / "trees.jsonl"
    res = _cli(
        "generate",
        str(tmp_path / "p.jsonl"),
        "--policy",
        FACTORY,
        "--backend",
        "factory",
        "--num-rollouts",
        "3",
        "--num-candidates",
        "3",
        "--output",
        str(out),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    assert [r.correct for r in read_problem_records(out)] == [True, True]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.sandbox
@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path: Path) -> None:
    problems_jsonl(tmp_path / "p.jsonl", n=6)
    out = tmp_path / "trees.jsonl"
    config = tmp_path / "solver.json"
    config.write_text(json.dumps({"generator_kwargs": {"latency_s": 0.2}}))
    cmd = [
        sys.executable, "-m", "rstar_math.cli", "generate", str(tmp_path / "p.jsonl"),
        "--policy", FACTORY, "--backend", "factory", "--config", str(config),
        "--num-rollouts", "3", "--num-candidates", "3", "--chunk-size", "1",
        "--output", str(out), "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # what a terminal's Ctrl-C reaches: a job started in the background of a shell without
        # job control inherits SIGINT ignored, and Python then keeps ignoring it
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 120
    while _lines(out) < 2:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"interrupted" in err
    text = out.read_text()
    assert text.endswith("\n")  # only whole records
    written = [json.loads(line)["problem_id"] for line in text.splitlines()]
    assert 2 <= len(written) < 6
    res = _cli(*cmd[3:])
    assert res.returncode == 0, res.stderr
    ids = [json.loads(line)["problem_id"] for line in out.read_text().splitlines()]
    assert ids == [f"p{i}" for i in range(6)]
