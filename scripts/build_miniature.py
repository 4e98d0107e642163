#!/usr/bin/env python
"""Rebuild the built-in miniature model (policy + PPM) from scratch on a CPU.

One command, resumable (every stage is recorded in ``RUN/build.json`` and skipped when done; the
trainers continue from their last checkpoint, tree generation from the last finished problem)::

    python scripts/build_miniature.py                    # RUN = build/miniature, then install
    python scripts/build_miniature.py --run-dir /tmp/m   # elsewhere
    python scripts/build_miniature.py --no-install       # build only, do not touch the package
    python scripts/build_miniature.py --recipe small.json  # override parts of RECIPE (deep merge)

What it does: rStar-Math's pipeline in miniature, with the library's own parts only.

1. ``data``: seeded synthetic splits (:func:`rstar_math.data.synthetic.make_splits`): teacher
   solutions of training problems (levels 1-3: 1-5 reasoning steps) for round 1, a disjoint pool
   of training problems for self-evolution, the validation split and the held-out ``hard`` split
   (``hard_level``: 8-9 steps where training has at most 5, never trained on), written as JSONL
   under ``RUN/data``.
2. ``init``: a byte-level BPE tokenizer (the format's step markers as special tokens) and a
   randomly initialised tiny Qwen2 (:mod:`rstar_math.models.tiny`).
3. ``sft_r1`` (round 1, the bootstrap): :func:`rstar_math.training.train_sft` on the teacher
   solutions. The teacher plays the role of the paper's few-shot-prompted bootstrap model.
   ``ppm_lm`` (skipped when the recipe's ``ppm_lm`` is null): a larger LM trained the same way on
   the same solutions with the same tokenizer, which every round's PPM starts from
   (``RoundConfig.ppm_init``) and whose likelihood of each step a token-evidence PPM
   (``round_ppm.evidence``) reads.
4. ``ref_pairs`` (off unless ``ppm_reference.problems`` > 0): PPM pairs checked against the
   teacher (:func:`rstar_math.training.reference_step_pairs`): the round-1 policy proposes next
   steps at every prefix of teacher solutions; each runs after the teacher's earlier steps and is
   right when the names it binds hold the teacher's values (with the every-sentence teacher: when
   it states what the teacher's step at its place states). Every round's PPM trains on them too.
5. ``evolve``: :class:`rstar_math.evolution.EvolutionRunner` runs the further rounds on the
   self-evolution pool: round 2 = terminal-guided MCTS with the round-1 policy -> SFT on its top-2
   correct trajectories per problem (mixed with a replay sample of the teacher solutions) + PPM
   trained on its preference pairs; round 3 = MCTS guided by that PPM with the round-2 policy ->
   SFT (its own trajectories, round 2's and the replay sample) + PPM again. With
   ``acceptance.methods``, a round keeps its policy only if it is not less accurate on held-back
   validation problems (``RUN/data/select.jsonl``) than the one before.
6. ``install``: copies the final policy and PPM (safetensors, config, tokenizer) into
   ``src/rstar_math/models/miniature/{policy,ppm}`` (with ``build_info.json``).

Timings of every stage go to ``RUN/build.json`` (and the log). Torch runs with one intra-op
thread by default (``--threads``): for models this small, more threads are slower on a 2-core
machine that is doing anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO / "src" / "rstar_math" / "models" / "miniature"

logger = logging.getLogger("build_miniature")

#: The recipe. Everything that shapes the shipped model is here (and recorded in build.json).
RECIPE: dict[str, Any] = {
    "seed": 0,
    # data
    "train_levels": ["level1", "level2", "level3"],
    # levels of the recipe's own that train_levels and evolve_levels may name, besides
    # rstar_math.data.synthetic.LEVELS: {name: LevelSpec fields}, e.g.
    # {"level4": {"hops": [6, 7], "distractors": [1, 3]}} (training must keep fewer hops than hard)
    "levels": {
        # the held-out split: hard's 8-9 hops (training: at most 5) with no distractor facts,
        # so its problems are as long as training ones (8.4 sentences) and test deeper
        # reasoning chains rather than longer texts (see hard_level)
        "hard-hops": {
            "hops": [8, 9],
            "distractors": [0, 0],
            "order": [0.3, 0.3, 0.4],
            "complex_weight": 1.2,
            "sum_prob": 0.25,
        },
    },
    "n_sft": 48000,  # teacher solutions for round 1
    # {level: weight} of the round-1 teacher solutions (None: equal numbers of each level). The
    # policy's trouble is composing steps, so the 3-step and 4-5-step problems get more weight.
    "sft_level_mix": {"level1": 1, "level2": 2, "level3": 2},
    "n_evolve": 400,  # self-evolution pool (disjoint from the round-1 problems)
    # the pool holds the longest training problems (levels 1-2 are solved all but always)
    "evolve_levels": ["level3"],
    # teacher solutions that open with a backward plan (teacher_solution(plan=True)), so that no
    # single step needs more than one hop of the problem's dependency graph
    "teacher_plan": False,
    # teacher steps whose comment quotes the question's sentence the step reads, word for word
    # (teacher_solution(quote=True)), instead of restating it
    "teacher_quote": True,
    # teacher steps that each write one needed sentence as a sympy equation, in the question's
    # order, and a final step that solves them (teacher_solution(equations=True)): no step has
    # to wait for a quantity computed later
    "teacher_equations": True,
    # teacher steps that write every sentence of the question, distractors included, in order,
    # each quoting its sentence and appending the equation it states; the final step solves
    # them (teacher_solution(every_sentence=True)): every step's choice is local
    "teacher_every_sentence": True,
    # "# Step k: ..." headers (False: "# ..."; step numbers past the training range are
    # tokens a tiny model has never seen)
    "teacher_step_numbers": False,
    "n_val": 300,
    "n_hard": 300,
    # the held-out split's level (rstar_math.data.synthetic.LEVELS or the recipe's own): "hard"
    # has more hops than training and more sentences (distractors); a level with hard's hops
    # and no distractors ({"hops": [8, 9], "distractors": [0, 0]}) tests longer reasoning
    # chains at the training problems' length
    "hard_level": "hard-hops",
    # tokenizer + model
    "tokenizer_corpus": 2000,
    "vocab_size": 1024,  # names and common words become single tokens: shorter texts
    "model": {
        "arch": "qwen2",
        # a policy of this size is unsure where it goes wrong on hard (some sample is right),
        # which leaves search room; at hidden size 128 its mistakes repeat in every sample
        "hidden_size": 64,
        "num_layers": 4,
        "num_heads": 4,
        "num_kv_heads": 2,
        "intermediate_size": 192,
        # hard problems with their solutions reach about 800 tokens
        "max_position_embeddings": 2048,
    },
    # round 1: SFT on teacher solutions
    "sft_r1": {
        "learning_rate": 3e-3,
        "num_epochs": 1.0,
        "batch_size": 8,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.05,
        "weight_decay": 0.01,
        "max_length": 1024,
        "packing": False,
        "group_by_length": True,  # 30% of a padded batch of mixed levels is padding otherwise
        # loss on the question's tokens too: a model trained from scratch has no pretraining
        "train_on_prompt": False,
        "save_every": 100,
        "log_every": 50,
    },
    # a larger LM that every round's PPM starts from (RoundConfig.ppm_init) instead of that
    # round's policy: {"hidden_size": ..., ...} overrides of "model", trained like round 1's
    # policy (sft_r1's settings, the same teacher solutions and tokenizer). None: each round's
    # PPM starts from its policy, as in the paper
    "ppm_lm": {"hidden_size": 128, "intermediate_size": 384},
    # rounds 2-3: self-evolution
    "search": {
        "algorithm": "mcts",
        "num_rollouts": 8,
        "num_candidates": 4,
        "temperature": 0.7,
        "c_puct": 2.0,
        "max_depth": 16,  # a hard problem has up to 13 sentences
        "max_step_tokens": 256,
    },
    # each round's SFT mixes its own correct trajectories with this many teacher solutions of
    # round 1 (and round 3 with round 2's trajectories): the paper's later rounds train on every
    # round's data; fine-tuned on its own few hundred solutions alone, the policy forgets
    "n_replay": 2000,
    "round_sft": {
        "learning_rate": 3e-4,
        "num_epochs": 1.0,
        "batch_size": 8,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.05,
        "max_length": 1024,
        "group_by_length": True,
        "save_every": 100,
        "log_every": 20,
    },
    "round_ppm": {
        # the evidence weights carry what the PPM knows; a higher rate wears it down
        "learning_rate": 1e-4,
        "num_epochs": 4.0,
        "batch_size": 8,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.05,
        "max_length": 1024,
        "eval_fraction": 0.1,
        "eval_every": 0,
        "save_every": 200,
        "log_every": 20,
        # token evidence of the PPM's backbone (PPMTrainingConfig.evidence), e.g.
        # ["solution_min_logprob", "solution_mean_logprob"]; [] : the value head alone
        "evidence": ["solution_min_logprob", "solution_mean_logprob"],
        "evidence_init": 1.0,
    },
    # PPM pairs checked against the teacher (rstar_math.training.reference_step_pairs): the
    # round-1 policy proposes next steps at every prefix of teacher solutions it was trained on;
    # each proposal runs after the teacher's earlier steps and is right when what it binds
    # matches the teacher. Every round's PPM trains on them as well as on its tree pairs.
    # problems=0: tree pairs only
    "ppm_reference": {"problems": 0, "samples": 4, "temperature": 0.7},
    "chunk_size": 100,
    # the acceptance check of rounds 2-3 (RoundConfig.acceptance): a round keeps its trained
    # policy only if it is at least as accurate by these methods ("greedy", "mcts") on the last
    # `problems` validation problems, which the benchmark then leaves out. Off ([]) in the
    # shipped build.
    "acceptance": {"methods": [], "problems": 100},
    "generator_max_batch_size": 400,
}

STAGES = ("data", "init", "sft_r1", "ppm_lm", "ref_pairs", "evolve", "install")
#: Files copied into the package (whatever of them the checkpoint has).
SHIP_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "ppm_config.json",
    "ppm_evidence.safetensors",  # a token-evidence PPM's extra weights, when the recipe asks
)


# --------------------------------------------------------------------------- bookkeeping


class Build:
    """``RUN/build.json``: the recipe, finished stages and their timings.

    A stage's ``seconds`` count every invocation that worked on it: the time spent so far is
    written to ``build.json`` every ``HEARTBEAT_S`` seconds (``running``), so a build that is
    killed and resumed still reports its true total.
    """

    HEARTBEAT_S = 30.0

    def __init__(self, run_dir: Path, recipe: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "build.json"
        if self.path.exists():
            self.state = json.loads(self.path.read_text())
            previous = self.state.get("recipe")
            if previous != json.loads(json.dumps(recipe)):
                # finished stages are kept: record which recipe they were built with
                done = [s for s in self.state["stages"] if s != "install"]
                logger.warning("the recipe changed; stages %s keep their earlier results", done)
                self.state.setdefault("earlier_recipes", []).append(
                    {"recipe": previous, "stages_finished": done}
                )
        else:
            self.state = {"recipe": recipe, "stages": {}, "started": time.time()}
        self.state["recipe"] = recipe
        self._lock = threading.Lock()
        self.save()

    def done(self, stage: str) -> bool:
        return stage in self.state["stages"]

    def run(self, stage: str, work: Any) -> None:
        """Run ``work()`` (returning the stage's info) and record the stage as finished."""
        running = self.state.get("running") or {}
        before = float(running.get("seconds", 0.0)) if running.get("stage") == stage else 0.0
        invocations = int(running.get("invocations", 0)) + 1 if before else 1
        t0 = time.perf_counter()
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(self.HEARTBEAT_S):
                with self._lock:
                    self.state["running"] = {
                        "stage": stage,
                        "seconds": round(before + time.perf_counter() - t0, 1),
                        "invocations": invocations,
                    }
                    self.save()

        thread = threading.Thread(target=heartbeat, name="build-heartbeat", daemon=True)
        thread.start()
        try:
            info = work()
        finally:
            stop.set()
            thread.join()
        seconds = before + time.perf_counter() - t0
        with self._lock:
            self.state.pop("running", None)
            self.state["stages"][stage] = {
                "seconds": round(seconds, 1),
                "invocations": invocations,
                **info,
            }
            self.save()
        logger.info("stage %s done in %.1f s (%d invocation(s))", stage, seconds, invocations)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)


#: Recipe keys whose value is taken whole (not merged): a mix or a set of levels is one choice,
#: and its keys may be levels the recipe defines itself; so is the PPM's LM (checked when built).
OPEN_KEYS = ("levels", "sft_level_mix", "ppm_lm")


def merge_recipe(base: dict[str, Any], override: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``base`` with ``override`` merged in, recursively; unknown keys are an error."""
    out = dict(base)
    for key, value in override.items():
        if key not in base:
            known = ", ".join(sorted(base))
            raise SystemExit(f"--recipe: unknown key {where}{key!r} (known: {known})")
        if f"{where}{key}" in OPEN_KEYS:
            out[key] = value
        elif isinstance(base[key], dict) and isinstance(value, dict):
            out[key] = merge_recipe(base[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --------------------------------------------------------------------------- stages


def sft_quota(n_sft: int, levels: list[str], mix: dict[str, float] | None) -> dict[str, int]:
    """How many round-1 teacher solutions of each level: ``n_sft`` split by ``mix``'s weights."""
    if not mix:
        mix = {level: 1.0 for level in levels}
    unknown = sorted(set(mix) - set(levels))
    if unknown or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise SystemExit(
            f"sft_level_mix: weights must be >= 0 (not all 0) over train_levels {levels}, got {mix}"
        )
    total = sum(mix.values())
    quota = {level: int(n_sft * w / total) for level, w in mix.items()}
    # rounding leftovers go to the heaviest levels, so the counts add up to n_sft
    for level in sorted(mix, key=lambda lv: -mix[lv])[: n_sft - sum(quota.values())]:
        quota[level] += 1
    return quota


def level_specs(r: dict[str, Any], names: list[str]) -> list[Any]:
    """The :class:`~rstar_math.data.synthetic.LevelSpec` of each level name: the recipe's own
    ``levels`` first, then :data:`rstar_math.data.synthetic.LEVELS`."""
    from dataclasses import fields

    from rstar_math.data.synthetic import LEVELS, LevelSpec

    own = r.get("levels") or {}
    clash = sorted(set(own) & set(LEVELS))
    if clash:
        raise SystemExit(f"levels: {clash} are built-in level names; give the new levels others")
    allowed = {f.name for f in fields(LevelSpec)} - {"name"}
    specs = []
    for name in names:
        if name in LEVELS:
            specs.append(LEVELS[name])
            continue
        if name not in own:
            known = ", ".join(sorted(LEVELS) + sorted(own))
            raise SystemExit(f"unknown level {name!r} (known: {known}; add it to 'levels')")
        spec = own[name]
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise SystemExit(
                f"levels.{name}: unknown field(s) {unknown} (LevelSpec has {sorted(allowed)})"
            )
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
        try:
            specs.append(LevelSpec(name, **values))
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"levels.{name}: {exc}") from exc
    return specs


def teacher_options(r: dict[str, Any]) -> dict[str, bool]:
    """The recipe's keyword arguments of :func:`rstar_math.data.synthetic.teacher_solution`."""
    if r["teacher_every_sentence"]:
        return {"every_sentence": True, "numbered": r["teacher_step_numbers"]}
    return {
        "plan": r["teacher_plan"],
        "quote": r["teacher_quote"],
        "equations": r["teacher_equations"],
        "numbered": r["teacher_step_numbers"],
    }


def stage_data(run: Path, r: dict[str, Any]) -> dict[str, Any]:
    from rstar_math.data.synthetic import make_splits, teacher_solution

    levels = list(r["train_levels"])
    specs = level_specs(r, levels)
    level_specs(r, list(r["evolve_levels"]))  # a misspelt pool level fails here, not later
    (hard_spec,) = level_specs(r, [r["hard_level"]])
    quota = sft_quota(r["n_sft"], levels, r.get("sft_level_mix"))
    # make_splits cycles through the levels; ask for enough to fill both pools
    n_train = len(levels) * max(quota.values()) + 3 * r["n_evolve"] * len(levels) // max(
        1, len(r["evolve_levels"])
    )
    splits = make_splits(
        r["seed"],
        n_train=n_train,
        n_val=r["n_val"],
        n_hard=r["n_hard"],
        train_levels=specs,
        hard_level=hard_spec,
    )
    sft, rest = [], []
    for p in splits["train"]:
        if quota.get(p.level, 0) > 0:
            quota[p.level] -= 1
            sft.append(p)
        else:
            rest.append(p)
    if any(quota.values()):
        raise RuntimeError(f"not enough training problems for the SFT mix (short: {quota})")
    # the pool holds equal numbers of each of its levels, in generation order: what is left
    # after the SFT quotas is not interleaved by level (the lightest SFT level's leftovers come
    # first), so taking the first n_evolve would fill the pool with that one level
    evolve_quota = sft_quota(r["n_evolve"], list(r["evolve_levels"]), None)
    evolve = []
    for p in rest:
        if evolve_quota.get(p.level, 0) > 0:
            evolve_quota[p.level] -= 1
            evolve.append(p)
    if any(evolve_quota.values()):
        raise RuntimeError(f"not enough self-evolution problems (short: {evolve_quota})")
    data = run / "data"
    data.mkdir(parents=True, exist_ok=True)
    _write_jsonl(
        data / "sft_r1.jsonl",
        [
            {
                "question": p.question,
                "response": teacher_solution(
                    p,
                    **teacher_options(r),
                ),
            }
            for p in sft
        ],
    )
    _write_jsonl(
        data / "evolve.jsonl",
        [
            {"id": f"evolve-{i}", "question": p.question, "answer": p.answer}
            for i, p in enumerate(evolve)
        ],
    )
    for name in ("val", "hard"):
        _write_jsonl(data / f"{name}.jsonl", [p.to_dict() for p in splits[name]])
    return {
        "sft": len(sft),
        "sft_levels": {level: sum(p.level == level for p in sft) for level in levels},
        "evolve": len(evolve),
        "evolve_levels": {
            level: sum(p.level == level for p in evolve) for level in r["evolve_levels"]
        },
        "val": len(splits["val"]),
        "hard": len(splits["hard"]),
        "hard_level": hard_spec.name,
    }


def stage_init(run: Path, r: dict[str, Any]) -> dict[str, Any]:
    from rstar_math.data.synthetic import corpus
    from rstar_math.models.tiny import build_tiny_model, build_tiny_tokenizer, save_tiny_model

    # the tokenizer corpus is its own seeded sample of training-level problems
    tok = build_tiny_tokenizer(
        corpus(
            r["tokenizer_corpus"],
            seed=r["seed"] + 1000,
            levels=level_specs(r, list(r["train_levels"])),
            **{k: v for k, v in teacher_options(r).items() if k != "numbered"},
        ),
        vocab_size=r["vocab_size"],
    )
    model = build_tiny_model(tok, seed=r["seed"], **r["model"])
    save_tiny_model(model, tok, run / "init")
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tok)}


def _train_on_teacher(run: Path, r: dict[str, Any], init: Path, out: Path, progress: bool) -> Any:
    """SFT of the model at ``init`` on round 1's teacher solutions, with ``sft_r1``'s settings."""
    from rstar_math.training import SFTRecord, SFTTrainingConfig, train_sft

    records = [
        SFTRecord(question=d["question"], response=d["response"])
        for d in _read_jsonl(run / "data" / "sft_r1.jsonl")
    ]
    cfg = SFTTrainingConfig.from_dict(
        {
            **r["sft_r1"],
            "output_dir": str(out),
            "device": "cpu",
            "seed": r["seed"],
            "progress": progress,
            "resume": True,
        }
    )
    result = train_sft(str(init), records, cfg)
    last = result.train_history[-1]["loss"] if result.train_history else None
    return {"model_dir": str(result.model_dir), "steps": result.global_step, "final_loss": last}


def stage_sft_r1(run: Path, r: dict[str, Any], progress: bool) -> dict[str, Any]:
    return _train_on_teacher(run, r, run / "init", run / "sft_r1", progress)


def stage_ppm_lm(run: Path, r: dict[str, Any], progress: bool) -> dict[str, Any]:
    """``RUN/ppm_lm``: the LM the PPMs start from, when the recipe asks for one (``ppm_lm``).

    It shares the policy's tokenizer, so the PPM reads exactly the token sequence the policy
    wrote, and learns the same teacher solutions: a larger model's likelihood of a step is the
    evidence a token-evidence PPM (``round_ppm.evidence``) adds to its value head.
    """
    from transformers import AutoTokenizer

    from rstar_math.models.tiny import build_tiny_model, save_tiny_model

    spec = r["ppm_lm"]
    if not spec:
        return {"model_dir": None}
    if not isinstance(spec, dict):
        raise SystemExit(f"ppm_lm must be null or a mapping of model overrides, got {spec!r}")
    unknown = sorted(set(spec) - set(RECIPE["model"]))
    if unknown:
        known = sorted(RECIPE["model"])
        raise SystemExit(f"ppm_lm: unknown model field(s) {unknown} (known: {known})")
    tok = AutoTokenizer.from_pretrained(run / "init")
    model = build_tiny_model(tok, seed=r["seed"], **{**r["model"], **spec})
    init = run / "ppm_lm" / "init"
    save_tiny_model(model, tok, init)
    info = _train_on_teacher(run, r, init, run / "ppm_lm", progress)
    return {"parameters": sum(p.numel() for p in model.parameters()), **info}


def stage_ref_pairs(run: Path, r: dict[str, Any]) -> dict[str, Any]:
    """``RUN/data/ref_pairs.jsonl``: round-1 policy proposals checked against the teacher."""
    from rstar_math.executors import SandboxExecutor
    from rstar_math.generators import HFGenerator
    from rstar_math.training import ReferencePairsConfig, reference_step_pairs, write_jsonl

    spec = r["ppm_reference"]
    path = run / "data" / "ref_pairs.jsonl"
    if not spec["problems"]:
        write_jsonl(path, [])
        return {"pairs": 0}
    rows = _read_jsonl(run / "data" / "sft_r1.jsonl")
    sample = random.Random(r["seed"] + 3000).sample(rows, min(spec["problems"], len(rows)))
    generator = HFGenerator(
        run / "sft_r1" / "final",
        device="cpu",
        max_batch_size=r["generator_max_batch_size"],
        seed=r["seed"],
    )
    config = ReferencePairsConfig(
        samples=spec["samples"],
        temperature=spec["temperature"],
        max_step_tokens=r["search"]["max_step_tokens"],
        batch_problems=r["chunk_size"],
        seed=r["seed"],
        statements=r["teacher_every_sentence"],
    )
    with SandboxExecutor() as executor:
        result = reference_step_pairs(sample, generator, executor, config)
    write_jsonl(path, result.pairs)
    return result.summary()


def evolution_config(run: Path, r: dict[str, Any], progress: bool) -> Any:
    from rstar_math.evolution import EvolutionConfig, RoundConfig

    policy_r1 = str(run / "sft_r1" / "final")
    replay = str(run / "data" / "replay.jsonl")
    round2_sft = str(run / "evolution" / "round_1" / "sft.jsonl")
    ref_pairs = [str(run / "data" / "ref_pairs.jsonl")] if r["ppm_reference"]["problems"] else []
    ppm_init = str(run / "ppm_lm" / "final") if r["ppm_lm"] else None
    search = dict(r["search"])
    acceptance = list(r["acceptance"]["methods"])
    validation = write_select(run, r) if acceptance else None
    sft = {**r["round_sft"], "device": "cpu"}
    ppm = {**r["round_ppm"], "device": "cpu"}
    rounds = [
        # round 2: terminal-guided MCTS with the round-1 policy
        RoundConfig(
            search=search,
            policy=policy_r1,
            use_ppm=False,
            sft_from="policy",
            sft_mix=[replay],
            acceptance=list(acceptance),
            sft=dict(sft),
            ppm=dict(ppm),
            ppm_mix=list(ref_pairs),
            ppm_init=ppm_init,
        ),
        # round 3: MCTS guided by the round-2 PPM, with the round-2 policy
        RoundConfig(
            search=search,
            policy=None,
            use_ppm=True,
            sft_from="policy",
            sft_mix=[replay, round2_sft],
            acceptance=list(acceptance),
            sft=dict(sft),
            ppm=dict(ppm),
            ppm_mix=list(ref_pairs),
            ppm_init=ppm_init,
        ),
    ]
    return EvolutionConfig(
        problems=str(run / "data" / "evolve.jsonl"),
        base_policy=policy_r1,
        rounds=rounds,
        validation=validation,
        backend="hf",
        device="cpu",
        chunk_size=r["chunk_size"],
        seed=r["seed"],
        generator_kwargs={"max_batch_size": r["generator_max_batch_size"], "seed": r["seed"]},
        show_progress=progress,
    )


def write_select(run: Path, r: dict[str, Any]) -> str:
    """``RUN/data/select.jsonl``: the last ``acceptance.problems`` validation problems, on which
    the acceptance check chooses policies (so the benchmark must not report on them)."""
    n = r["acceptance"]["problems"]
    rows = _read_jsonl(run / "data" / "val.jsonl")
    if not 0 < n < len(rows):
        raise ValueError(
            f"acceptance.problems must be between 1 and {len(rows) - 1} (the validation split "
            f"has {len(rows)} problems and the benchmark needs the rest), got {n}"
        )
    path = run / "data" / "select.jsonl"
    _write_jsonl(
        path,
        [
            {"id": f"select-{i}", "question": row["question"], "answer": row["answer"]}
            for i, row in enumerate(rows[-n:])
        ],
    )
    return str(path)


def write_replay(run: Path, r: dict[str, Any]) -> int:
    """``RUN/data/replay.jsonl``: a seeded sample of round 1's teacher solutions."""
    path = run / "data" / "replay.jsonl"
    rows = _read_jsonl(run / "data" / "sft_r1.jsonl")
    sample = random.Random(r["seed"] + 2000).sample(rows, min(r["n_replay"], len(rows)))
    _write_jsonl(path, sample)
    return len(sample)


def stage_evolve(run: Path, r: dict[str, Any], progress: bool) -> dict[str, Any]:
    from rstar_math.evolution import EvolutionRunner

    replayed = write_replay(run, r)
    runner = EvolutionRunner(evolution_config(run, r, progress), run / "evolution")
    manifest = runner.run()
    rounds = manifest["rounds"]
    ppm = runner.final_ppm()
    if ppm is None:
        raise RuntimeError("no round produced preference pairs, so there is no PPM to ship")
    return {
        "replay_records": replayed,
        "rounds": {
            name: {
                stage: {k: v for k, v in info.items() if k != "finished"}
                for stage, info in state["stages"].items()
            }
            for name, state in rounds.items()
        },
        "policy": runner.final_policy(),
        "ppm": ppm,
    }


def final_models(build: Build) -> tuple[str, str]:
    info = build.state["stages"]["evolve"]
    return info["policy"], info["ppm"]


def _relative_to_run(value: Any, run: Path) -> Any:
    """``value`` with every path string inside ``run`` rewritten as ``RUN/...``."""
    if isinstance(value, dict):
        return {k: _relative_to_run(v, run) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative_to_run(v, run) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        path = Path(value)
        if path == run or run in path.parents:
            return str(Path("RUN") / path.relative_to(run))
    return value


def stage_install(build: Build, dest: Path) -> dict[str, Any]:
    """Copy the final policy and PPM (inference files only) into ``dest``, both or neither."""
    from rstar_math.models import builtin

    policy, ppm = final_models(build)
    sources = {"policy": Path(policy), "ppm": Path(ppm)}
    required = {"policy": builtin._POLICY_FILES, "ppm": builtin._PPM_FILES}
    for name, src in sources.items():
        missing = [f for f in required[name] if not (src / f).is_file()]
        if missing:
            raise RuntimeError(f"the final {name} at {src} lacks {', '.join(missing)}")
    files = {name: [f for f in SHIP_FILES if (src / f).is_file()] for name, src in sources.items()}
    sizes = {name: sum((sources[name] / f).stat().st_size for f in files[name]) for name in files}
    total = sum(sizes.values())
    if total > 20 * 1024**2:
        raise RuntimeError(f"the miniature model is {total / 1024**2:.1f} MB; the limit is 20 MB")
    dest.mkdir(parents=True, exist_ok=True)
    staged = {}
    for name, src in sources.items():
        tmp = dest / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for f in files[name]:
            shutil.copy2(src / f, tmp / f)
        staged[name] = tmp
    for name, tmp in staged.items():  # swap both only once both are staged
        shutil.rmtree(dest / name, ignore_errors=True)
        os.replace(tmp, dest / name)
    info = {
        "recipe": build.state["recipe"],
        "earlier_recipes": build.state.get("earlier_recipes", []),
        "stages": {k: v for k, v in build.state["stages"].items() if k != "install"},
        "bytes": sizes,
    }
    # paths inside the run directory are written relative to it ("RUN/..."): the machine's
    # directories mean nothing to whoever installs the package
    info = _relative_to_run(info, build.run_dir.resolve())
    (dest / "build_info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return {"bytes": sizes, "dest": str(dest)}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--run-dir", default=str(REPO / "build" / "miniature"))
    ap.add_argument("--install-dir", default=str(PACKAGE_DIR))
    ap.add_argument("--no-install", action="store_true", help="build only")
    ap.add_argument("--recipe", help="JSON file of RECIPE overrides (merged key by key)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--until", choices=STAGES, help="stop after this stage")
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    args = ap.parse_args(argv)

    recipe = RECIPE
    if args.recipe:
        recipe = merge_recipe(RECIPE, json.loads(Path(args.recipe).read_text()))
    run = Path(args.run_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(run / "build.log")],
    )
    import torch

    torch.set_num_threads(args.threads)
    build = Build(run, recipe)
    work = {
        "data": lambda: stage_data(run, recipe),
        "init": lambda: stage_init(run, recipe),
        "sft_r1": lambda: stage_sft_r1(run, recipe, args.progress),
        "ppm_lm": lambda: stage_ppm_lm(run, recipe, args.progress),
        "ref_pairs": lambda: stage_ref_pairs(run, recipe),
        "evolve": lambda: stage_evolve(run, recipe, args.progress),
        "install": lambda: stage_install(build, Path(args.install_dir)),
    }
    t_start = time.perf_counter()
    for stage in STAGES:
        if stage == "install" and args.no_install:
            break
        if not build.done(stage) or stage == "install":  # installing is cheap: always redo it
            logger.info("stage %s ...", stage)
            build.run(stage, work[stage])
        if stage == args.until:
            break
    total = sum(s["seconds"] for s in build.state["stages"].values())
    build.state["total_seconds"] = round(total, 1)
    build.save()
    logger.info(
        "done: %.1f min of stage time in all (%.1f min this invocation)",
        total / 60,
        (time.perf_counter() - t_start) / 60,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
