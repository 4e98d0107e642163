"""``scripts/build_miniature.py``: the one command that rebuilds the built-in model.

The real recipe takes over an hour, so these tests run the script's own stages on a recipe scaled
down to seconds (same code path, smaller numbers): data, tokenizer + model, round-1 SFT, resuming,
the evolution config it hands to :class:`~rstar_math.evolution.EvolutionRunner`, and installing a
policy + PPM where :func:`rstar_math.models.builtin.builtin_paths` finds them.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from rstar_math.training import read_pairs

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "build_miniature.py"

#: The real recipe's shape at a few seconds' scale.
SMALL = {
    "n_sft": 24,
    "n_evolve": 3,
    "n_val": 3,
    "n_hard": 2,
    "tokenizer_corpus": 60,
    "vocab_size": 320,
    "model": {
        "hidden_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "num_kv_heads": 1,
        "intermediate_size": 64,
        "max_position_embeddings": 1024,
    },
    "sft_r1": {"batch_size": 4, "save_every": 2, "log_every": 1},
    "ppm_reference": {"problems": 4},
}
#: The teacher formats before the every-sentence one (what the plan/quote/equation keys shape).
EARLIER = {"teacher_every_sentence": False, "teacher_step_numbers": True}


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_miniature", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def test_recipe_overrides_merge_and_reject_unknown_keys() -> None:
    build = _script()
    merged = build.merge_recipe(build.RECIPE, {"n_sft": 5, "model": {"hidden_size": 16}})
    assert merged["n_sft"] == 5 and merged["model"]["hidden_size"] == 16
    assert merged["model"]["num_layers"] == build.RECIPE["model"]["num_layers"]
    assert build.RECIPE["n_sft"] != 5  # the module's recipe is left alone
    with pytest.raises(SystemExit, match=r"unknown key model\.'hidden'"):
        build.merge_recipe(build.RECIPE, {"model": {"hidden": 16}})


@pytest.mark.slow
@pytest.mark.hf
def test_build_stages_resume_and_install(tmp_path: Path) -> None:
    build = _script()
    run, install = tmp_path / "run", tmp_path / "installed"
    recipe_file = tmp_path / "small.json"
    recipe_file.write_text(json.dumps(SMALL))
    args = ("--run-dir", str(run), "--recipe", str(recipe_file), "--install-dir", str(install))

    done = _run(*args, "--until", "sft_r1")
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((run / "build.json").read_text())
    assert list(state["stages"]) == ["data", "init", "sft_r1"]
    assert state["recipe"]["n_sft"] == 24 and "running" not in state
    assert state["stages"]["data"]["sft"] == 24 and state["stages"]["data"]["hard"] == 2
    for name in ("sft_r1", "evolve", "val", "hard"):
        assert (run / "data" / f"{name}.jsonl").is_file()
    assert (run / "sft_r1" / "final" / "model.safetensors").is_file()
    assert state["stages"]["sft_r1"]["steps"] == 6  # 24 records, batch 4, one epoch
    assert all(s["seconds"] > 0 and s["invocations"] == 1 for s in state["stages"].values())

    # a second invocation finds every stage done and redoes none of them
    before = (run / "sft_r1" / "final" / "model.safetensors").read_bytes()
    again = _run(*args, "--until", "sft_r1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "build.json").read_text())["stages"] == state["stages"]
    assert (run / "sft_r1" / "final" / "model.safetensors").read_bytes() == before

    # reference-checked PPM pairs from the round-1 policy's proposals on teacher solutions
    done = _run(*args, "--until", "ref_pairs")
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((run / "build.json").read_text())["stages"]["ref_pairs"]
    assert info["problems"] == 4 and info["skipped_problems"] == 0
    assert info["right"] + info["wrong"] + info["unlabeled"] == info["proposals"]
    ref_pairs = run / "data" / "ref_pairs.jsonl"
    written = list(read_pairs(ref_pairs))
    assert len(written) == info["pairs"]
    teacher = {json.loads(line)["question"] for line in (run / "data" / "sft_r1.jsonl").open()}
    assert all(p.question in teacher and p.meta["source"] == "reference" for p in written)

    # the rounds it asks the evolution runner for: terminal-guided, then PPM-guided
    recipe = build.merge_recipe(build.RECIPE, SMALL)
    config = build.evolution_config(run, recipe, progress=False)
    # both rounds' PPMs train on the reference pairs too (none with problems=0)
    assert [r.ppm_mix for r in config.rounds] == [[str(ref_pairs)]] * 2
    plain = build.merge_recipe(recipe, {"ppm_reference": {"problems": 0}})
    assert [r.ppm_mix for r in build.evolution_config(run, plain, False).rounds] == [[], []]
    assert config.base_policy == str(run / "sft_r1" / "final")
    assert [r.use_ppm for r in config.rounds] == [False, True]
    # round 2 trains on its own trajectories + replayed teacher solutions; round 3 adds round 2's
    replay = str(run / "data" / "replay.jsonl")
    assert config.rounds[0].sft_mix == [replay]
    assert config.rounds[1].sft_mix == [replay, str(run / "evolution" / "round_1" / "sft.jsonl")]
    assert build.write_replay(run, {**recipe, "n_replay": 5}) == 5
    replayed = [json.loads(line) for line in Path(replay).read_text().splitlines()]
    teacher_file = run / "data" / "sft_r1.jsonl"
    teacher = [json.loads(line) for line in teacher_file.read_text().splitlines()]
    assert len(replayed) == 5 and all(r in teacher for r in replayed)
    assert config.rounds[0].policy == config.base_policy and config.rounds[1].policy is None

    # installing copies a complete policy + PPM that the built-in loader accepts
    from rstar_math.models import builtin
    from rstar_math.scorers import PPMModel

    policy = run / "sft_r1" / "final"
    PPMModel.from_policy(str(policy)).save_pretrained(tmp_path / "ppm")
    book = build.Build(run, recipe)
    book.state["stages"]["evolve"] = {
        "seconds": 1.0,
        "policy": str(policy),
        "ppm": str(tmp_path / "ppm"),
    }
    info = build.stage_install(book, install)
    assert set(info["bytes"]) == {"policy", "ppm"}
    assert not (install / "policy" / "trainer_state.json").exists()  # only what inference needs
    text = (install / "build_info.json").read_text()
    assert str(run) not in text and '"RUN/sft_r1/final"' in text  # no paths of the build machine
    shipped = json.loads(text)
    assert shipped["recipe"]["n_sft"] == 24 and "sft_r1" in shipped["stages"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(builtin.ENV_DIR, str(install))
        assert builtin.builtin_paths() == (str(install / "policy"), str(install / "ppm"))


def test_sft_level_mix_sets_the_teacher_solutions_of_each_level(tmp_path: Path) -> None:
    build = _script()
    levels = ["level1", "level2", "level3"]
    assert build.sft_quota(10, levels, None) == {"level1": 4, "level2": 3, "level3": 3}
    mix = {"level1": 1, "level2": 2, "level3": 2}
    assert build.sft_quota(64000, levels, mix) == {
        "level1": 12800,
        "level2": 25600,
        "level3": 25600,
    }
    assert sum(build.sft_quota(7, levels, mix).values()) == 7  # rounding never loses one
    for bad in ({"level4": 1}, {"level1": 0}, {"level1": -1, "level2": 2}):
        with pytest.raises(SystemExit, match="sft_level_mix"):
            build.sft_quota(10, levels, bad)

    recipe = build.merge_recipe(
        build.RECIPE,
        {
            **SMALL,
            "n_sft": 25,
            "sft_level_mix": {"level1": 0, "level2": 1, "level3": 4},
            "evolve_levels": ["level3"],
        },
    )
    info = build.stage_data(tmp_path, recipe)
    assert info["sft"] == 25 and info["sft_levels"] == {"level1": 0, "level2": 5, "level3": 20}
    teacher = [
        json.loads(x) for x in (tmp_path / "data" / "sft_r1.jsonl").read_text().split("\n")[:-1]
    ]
    pool = [
        json.loads(x) for x in (tmp_path / "data" / "evolve.jsonl").read_text().split("\n")[:-1]
    ]
    assert len(teacher) == 25 and len(pool) == 3
    assert not {r["question"] for r in teacher} & {r["question"] for r in pool}


def test_the_self_evolution_pool_holds_equal_numbers_of_its_levels(tmp_path: Path) -> None:
    """After a skewed SFT mix, the leftovers start with the lightest level's problems only."""
    build = _script()
    recipe = build.merge_recipe(
        build.RECIPE,
        {
            **SMALL,
            "n_sft": 30,
            "sft_level_mix": {"level1": 1, "level2": 4, "level3": 4},
            "n_evolve": 7,
            "evolve_levels": ["level1", "level2", "level3"],
        },
    )
    info = build.stage_data(tmp_path, recipe)
    assert info["evolve"] == 7
    assert sorted(info["evolve_levels"].values()) == [2, 2, 3]
    recipe["evolve_levels"] = ["level2"]
    assert build.stage_data(tmp_path / "b", recipe)["evolve_levels"] == {"level2": 7}


def test_without_a_mix_the_teacher_solutions_are_make_splits_first_ones(tmp_path: Path) -> None:
    """Recipes written before ``sft_level_mix`` existed still select the same round-1 data."""
    from rstar_math.data.synthetic import make_splits

    build = _script()
    recipe = build.merge_recipe(build.RECIPE, {**SMALL, "sft_level_mix": None})
    build.stage_data(tmp_path, recipe)
    teacher = [
        json.loads(x) for x in (tmp_path / "data" / "sft_r1.jsonl").read_text().split("\n")[:-1]
    ]
    expected = make_splits(recipe["seed"], n_train=30, n_val=3, n_hard=2)["train"][:24]
    assert [r["question"] for r in teacher] == [p.question for p in expected]


def test_teacher_plan_writes_planned_solutions_of_the_same_problems(tmp_path: Path) -> None:
    from rstar_math.data.synthetic import SyntheticProblem, teacher_solution

    build = _script()
    assert build.RECIPE["teacher_plan"] is False  # the shipped build's solutions have no plan
    recipe = build.merge_recipe(
        build.RECIPE, {**SMALL, **EARLIER, "teacher_plan": True, "teacher_equations": False}
    )
    build.stage_data(tmp_path, recipe)
    rows = [json.loads(x) for x in (tmp_path / "data" / "sft_r1.jsonl").read_text().splitlines()]
    assert all("# Step 1: Plan backwards from what is asked" in r["response"] for r in rows)
    plain = tmp_path / "plain"
    build.stage_data(plain, {**recipe, "teacher_plan": False})
    plain_rows = [json.loads(x) for x in (plain / "data" / "sft_r1.jsonl").read_text().splitlines()]
    assert [r["question"] for r in rows] == [r["question"] for r in plain_rows]
    assert not any("Plan backwards" in r["response"] for r in plain_rows)
    # validation problems keep the graph that a plan is built from
    val = (tmp_path / "data" / "val.jsonl").read_text().splitlines()
    assert "Plan backwards" in teacher_solution(
        SyntheticProblem.from_dict(json.loads(val[0])), plan=True
    )


def test_teacher_quote_writes_quoting_solutions_of_the_same_problems(tmp_path: Path) -> None:
    build = _script()
    recipe = build.merge_recipe(
        build.RECIPE, {**SMALL, **EARLIER, "teacher_quote": True, "teacher_equations": False}
    )
    build.stage_data(tmp_path, recipe)
    rows = [json.loads(x) for x in (tmp_path / "data" / "sft_r1.jsonl").read_text().splitlines()]
    plain = tmp_path / "plain"
    build.stage_data(plain, {**recipe, "teacher_quote": False})
    plain_rows = [json.loads(x) for x in (plain / "data" / "sft_r1.jsonl").read_text().splitlines()]
    assert [r["question"] for r in rows] == [r["question"] for r in plain_rows]
    for row, plain_row in zip(rows, plain_rows, strict=True):
        first = row["response"].split("\n")[1].removeprefix("# Step 1: ")
        assert first in row["question"]  # the comment is the question's own sentence
        assert first not in plain_row["response"]


def test_teacher_equations_writes_equation_solutions_of_the_same_problems(tmp_path: Path) -> None:
    build = _script()
    recipe = build.merge_recipe(
        build.RECIPE, {**SMALL, **EARLIER, "teacher_equations": True, "teacher_quote": False}
    )
    build.stage_data(tmp_path, recipe)
    rows = [json.loads(x) for x in (tmp_path / "data" / "sft_r1.jsonl").read_text().splitlines()]
    plain = tmp_path / "plain"
    build.stage_data(plain, {**recipe, "teacher_equations": False})
    plain_rows = [json.loads(x) for x in (plain / "data" / "sft_r1.jsonl").read_text().splitlines()]
    assert [r["question"] for r in rows] == [r["question"] for r in plain_rows]
    for row, plain_row in zip(rows, plain_rows, strict=True):
        assert "eqs.append(Eq(" in row["response"] and "solve(eqs" in row["response"]
        assert "eqs.append" not in plain_row["response"]
        # the same answer either way
        assert (
            row["response"].rsplit("<output>", 1)[1]
            == plain_row["response"].rsplit("<output>", 1)[1]
        )


def test_the_shipped_recipe_writes_every_sentence_without_step_numbers(tmp_path: Path) -> None:
    from rstar_math.data.synthetic import SyntheticProblem, teacher_solution

    build = _script()
    assert build.RECIPE["teacher_every_sentence"] is True
    assert build.RECIPE["teacher_step_numbers"] is False
    recipe = build.merge_recipe(build.RECIPE, SMALL)
    build.stage_data(tmp_path, recipe)
    rows = [json.loads(x) for x in (tmp_path / "data" / "sft_r1.jsonl").read_text().splitlines()]
    for row in rows:
        assert "# Step" not in row["response"] and "eqs.append('" in row["response"]
        first = row["response"].split("\n")[1].removeprefix("# ")
        assert row["question"].startswith(first)  # the question's first sentence, quoted
    val = [json.loads(x) for x in (tmp_path / "data" / "val.jsonl").read_text().splitlines()]
    problem = SyntheticProblem.from_dict(val[0])
    assert teacher_solution(problem, every_sentence=True, numbered=False).startswith(
        "<code>\n# " + problem.question.split(". ")[0]
    )
    build.stage_init(tmp_path, recipe)
    tokenizer = json.loads((tmp_path / "init" / "tokenizer.json").read_text())
    assert any("append" in token for token in tokenizer["model"]["vocab"])


def test_a_recipe_can_train_on_levels_of_its_own(tmp_path: Path) -> None:
    """``levels`` defines new levels (LevelSpec fields) that train and pool levels may name."""
    from rstar_math.data.synthetic import SyntheticProblem

    build = _script()
    level4 = {"hops": [6, 7], "distractors": [0, 1], "order": [1, 0, 0]}
    recipe = build.merge_recipe(
        build.RECIPE,
        {
            **SMALL,
            # taken whole: a recipe that adds levels keeps the ones it needs (here hard's)
            "levels": {"level4": level4, "hard-hops": build.RECIPE["levels"]["hard-hops"]},
            "train_levels": ["level1", "level4"],
            "sft_level_mix": {"level1": 1, "level4": 2},
            "n_sft": 12,
            "n_val": 8,  # the splits cycle through the four families, then the levels
            "evolve_levels": ["level4"],
        },
    )
    assert set(recipe["levels"]) == {"level4", "hard-hops"}  # taken whole, not merged by key
    with pytest.raises(SystemExit, match="unknown level 'hard-hops'"):
        build.stage_data(
            tmp_path / "lost", build.merge_recipe(recipe, {"levels": {"level4": level4}})
        )
    info = build.stage_data(tmp_path, recipe)
    assert info["sft_levels"] == {"level1": 4, "level4": 8}
    assert info["evolve_levels"] == {"level4": 3}
    pool = {json.loads(x)["question"] for x in (tmp_path / "data" / "evolve.jsonl").open()}
    val = [
        SyntheticProblem.from_dict(json.loads(x)) for x in (tmp_path / "data" / "val.jsonl").open()
    ]
    assert {p.level for p in val} <= {"level1", "level4"}
    deep = [p for p in val if p.level == "level4"]
    assert deep and all(6 <= p.hops <= 7 for p in deep)
    assert len(pool) == 3

    for bad, match in (
        ({"levels": {"level3": level4}}, "built-in level names"),
        ({"train_levels": ["level1", "level9"]}, "unknown level 'level9'"),
        ({"levels": {"level4": {**level4, "depth": 3}}, "train_levels": ["level4"]}, "depth"),
        (
            {
                "levels": {"level4": {"hops": [0, 7], "distractors": [0, 1]}},
                "train_levels": ["level4"],
            },
            "hops",
        ),
    ):
        with pytest.raises(SystemExit, match=match):
            build.stage_data(tmp_path / "bad", build.merge_recipe(recipe, bad))


def test_the_acceptance_check_chooses_on_held_back_validation_problems(tmp_path: Path) -> None:
    build = _script()
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    val = [{"question": f"q{i}?", "answer": str(i), "solution": "..."} for i in range(5)]
    (run / "data" / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))

    shipped = build.evolution_config(run, build.RECIPE, progress=False)
    assert shipped.validation is None and [r.acceptance for r in shipped.rounds] == [[], []]
    assert not (run / "data" / "select.jsonl").exists()

    recipe = build.merge_recipe(
        build.RECIPE, {"acceptance": {"methods": ["greedy", "mcts"], "problems": 2}}
    )
    config = build.evolution_config(run, recipe, progress=False)
    assert config.validation == str(run / "data" / "select.jsonl")
    assert [r.acceptance for r in config.rounds] == [["greedy", "mcts"]] * 2
    chosen = [json.loads(line) for line in (run / "data" / "select.jsonl").open()]
    assert [(r["question"], r["answer"]) for r in chosen] == [("q3?", "3"), ("q4?", "4")]

    too_many = build.merge_recipe(recipe, {"acceptance": {"problems": 5}})
    with pytest.raises(ValueError, match=r"acceptance\.problems must be between 1 and 4"):
        build.evolution_config(run, too_many, progress=False)


def test_the_hard_split_can_be_a_level_of_the_recipe(tmp_path: Path) -> None:
    """``hard_level`` picks the held-out split's level; the training data does not change.

    The shipped recipe's is its own "hard-hops" level: hard's hops without distractor facts.
    """
    from rstar_math.data.synthetic import SyntheticProblem

    build = _script()
    own = build.merge_recipe(build.RECIPE, {**SMALL, "n_hard": 6})
    assert build.stage_data(tmp_path / "hops", own)["hard_level"] == "hard-hops"
    recipe = build.merge_recipe(own, {"hard_level": "hard"})  # the library's hard level
    assert build.stage_data(tmp_path / "hard", recipe)["hard_level"] == "hard"
    hops = own["levels"]["hard-hops"]

    def read(run: str, name: str) -> list[str]:
        return (tmp_path / run / "data" / f"{name}.jsonl").read_text().splitlines()

    hard = [SyntheticProblem.from_dict(json.loads(x)) for x in read("hops", "hard")]
    assert len(hard) == 6 and all(p.level == "hard-hops" and 8 <= p.hops <= 9 for p in hard)
    assert all(p.meta["distractors"] == 0 for p in hard)
    default = [SyntheticProblem.from_dict(json.loads(x)) for x in read("hard", "hard")]
    assert any(p.meta["distractors"] > 0 for p in default)
    for name in ("sft_r1", "evolve", "val"):  # the models train and select on the same data
        assert read("hops", name) == read("hard", name)

    shallow = build.merge_recipe(own, {"levels": {"hard-hops": {**hops, "hops": [4, 9]}}})
    with pytest.raises(ValueError, match="more hops than training"):
        build.stage_data(tmp_path / "bad", shallow)
    with pytest.raises(SystemExit, match="unknown level 'deep'"):
        build.stage_data(tmp_path / "bad", build.merge_recipe(own, {"hard_level": "deep"}))


@pytest.mark.slow
@pytest.mark.hf
def test_ppm_lm_trains_a_larger_lm_that_every_rounds_ppm_starts_from(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    build = _script()
    run = tmp_path / "run"
    plain = build.merge_recipe(build.RECIPE, {**SMALL, "ppm_lm": None})  # the paper's way
    assert build.stage_ppm_lm(run, plain, progress=False) == {"model_dir": None}
    assert [r.ppm_init for r in build.evolution_config(run, plain, False).rounds] == [None, None]

    evidence = ["solution_min_logprob", "solution_mean_logprob"]
    recipe = build.merge_recipe(
        plain, {"ppm_lm": {"hidden_size": 48}, "round_ppm": {"evidence": evidence}}
    )
    build.stage_data(run, recipe)
    build.stage_init(run, recipe)
    info = build.stage_ppm_lm(run, recipe, progress=False)
    final = run / "ppm_lm" / "final"
    assert info["model_dir"] == str(final) and info["steps"] == 6  # sft_r1's settings
    config = AutoConfig.from_pretrained(final)
    assert config.hidden_size == 48 and config.num_hidden_layers == SMALL["model"]["num_layers"]
    # the policy's tokenizer: the PPM reads the very tokens the policy wrote
    text = json.loads((run / "data" / "sft_r1.jsonl").read_text().splitlines()[0])["response"]
    policy_tok = AutoTokenizer.from_pretrained(run / "init")
    assert AutoTokenizer.from_pretrained(final)(text)["input_ids"] == policy_tok(text)["input_ids"]

    rounds = build.evolution_config(run, recipe, progress=False).rounds
    assert [r.ppm_init for r in rounds] == [str(final)] * 2
    assert all(list(r.ppm["evidence"]) == evidence for r in rounds)

    with pytest.raises(SystemExit, match=r"ppm_lm: unknown model field\(s\) \['width'\]"):
        build.stage_ppm_lm(run, build.merge_recipe(recipe, {"ppm_lm": {"width": 3}}), False)
