"""Self-evolution: problems -> trees -> SFT records + PPM pairs -> policy and PPM -> next round.

A run lives in one directory::

    RUN/manifest.json            the run's config and each round's finished stages
    RUN/round_1/trees.jsonl      one record per problem (written as each finishes)
    RUN/round_1/trees_extra.jsonl  extra-rollout searches of still-unsolved problems (rounds 3-4)
    RUN/round_1/sft.jsonl        top-k correct trajectories per problem
    RUN/round_1/pairs.jsonl      PPM preference pairs
    RUN/round_1/policy/          SFT trainer output; the policy is policy/final
    RUN/round_1/accept/          the acceptance check's evaluations (rounds with ``acceptance``)
    RUN/round_1/ppm/             PPM trainer output; the PPM is ppm/final

Every stage is idempotent and resumable: generation skips problems already written, extraction
writes to a temporary file renamed into place, trainers continue from their last checkpoint, and
the manifest (rewritten atomically) records a stage only once it is complete. Running the same
command again after a kill continues where it stopped.

Round presets follow the paper: round 1 runs a bootstrap policy with the few-shot prompt and
terminal-guided MCTS; round 2 the round-1 SFT policy, terminal-guided, more rollouts; rounds 3-4
MCTS guided by the previous round's PPM, with extra rollouts for problems still unsolved.

A round with ``acceptance`` keeps its trained policy only if that policy is at least as accurate
on the run's ``validation`` problems as the policy the run would otherwise continue with; a
rejected policy stays on disk and in the manifest, and the next round starts from the kept one.
The paper keeps every round; a policy of a few million parameters can lose more from a few
hundred of its own solutions than it gains, and the check makes a round unable to lower it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rstar_math._config import check_keys
from rstar_math.data.loaders import Problem, load_problems
from rstar_math.evolution.generate import generate_trees, read_problem_records
from rstar_math.evolution.spec import SolverSpec
from rstar_math.search.config import SearchConfig

__all__ = ["EvolutionConfig", "EvolutionRunner", "RoundConfig"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STAGES = ("generate", "generate_extra", "extract", "train_sft", "accept", "train_ppm")
#: How the acceptance check measures a policy: greedy decoding, and MCTS without a PPM whose
#: answer is the majority over its trajectories (with no PPM and no reference at test time every
#: terminal is worth 0, so UCT must try unvisited children first).
ACCEPTANCE_METHODS = ("greedy", "mcts")
#: Cut-off for evaluate()'s "first k trajectories": every trajectory of the tree.
_ALL_TRAJECTORIES = 1 << 30


@dataclass
class RoundConfig:
    """One round of self-evolution.

    ``policy``: the generator of this round's trees; ``None`` takes the previous round's trained
    policy. ``use_ppm``: guide the search with the previous round's PPM. ``extra_rollouts``:
    problems without a correct answer after the main search are searched again with this many
    rollouts (0: off). ``sft_from``: ``"base"`` fine-tunes the run's base policy on this round's
    data (the paper), ``"policy"`` continues from this round's generator. ``sft_mix``: JSONL files
    of SFT records trained on together with this round's own (earlier rounds' ``sft.jsonl``, the
    bootstrap data): the paper's later rounds train on the data of every round so far, and a
    small policy fine-tuned on a few hundred of its own solutions alone forgets the rest. A round
    that finds no correct trajectory of its own trains no policy, whatever ``sft_mix`` holds.
    ``ppm_mix``: likewise, JSONL files of preference pairs (earlier rounds' ``pairs.jsonl``) the
    PPM trains on together with this round's own; a few hundred pairs a round are too few for a
    PPM to generalise from. A round with no pairs of its own trains no PPM.
    ``acceptance``: methods among :data:`ACCEPTANCE_METHODS` (``"greedy"``, ``"mcts"``, the
    latter with this round's search settings and no PPM); when given, the round's trained policy
    is kept only if on the run's ``validation`` problems it is at least as accurate by every
    listed method as the policy it would replace (the latest kept one, or the base policy). Empty
    (the default, the paper): every trained policy is kept. The round's PPM is initialised from
    the kept policy, or from ``ppm_init`` when given: a causal LM (or PPM) directory with the
    policy's tokenizer, e.g. a larger model fine-tuned on the same data, whose likelihoods a PPM
    with token evidence (``ppm: {"evidence": [...]}``) reads (see
    :mod:`rstar_math.scorers.ppm`). The paper initialises the PPM from the policy.
    """

    search: SearchConfig = field(default_factory=SearchConfig.paper_sampling)
    policy: str | None = None
    use_ppm: bool = False
    prompt: str = "sft"
    extra_rollouts: int = 0
    train_policy: bool = True
    train_ppm: bool = True
    sft_from: str = "base"
    sft_k: int = 2
    pairs_pos: int = 2
    pairs_neg: int = 2
    pairs_margin: float = 0.0
    sft_mix: list[str] = field(default_factory=list)
    ppm_mix: list[str] = field(default_factory=list)
    ppm_init: str | None = None
    acceptance: list[str] = field(default_factory=list)
    sft: dict[str, Any] = field(default_factory=dict)
    ppm: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("sft_mix", "ppm_mix"):
            paths = getattr(self, name)
            if isinstance(paths, (str, os.PathLike)):
                raise ValueError(f"{name} must be a list of JSONL paths, not one path")
            setattr(self, name, [str(path) for path in paths])
        if self.ppm_init is not None:
            self.ppm_init = os.fspath(self.ppm_init)
        if isinstance(self.search, dict):
            self.search = SearchConfig.from_dict(self.search)
        if self.sft_from not in ("base", "policy"):
            raise ValueError(f"sft_from must be 'base' or 'policy', got {self.sft_from!r}")
        if self.extra_rollouts < 0:
            raise ValueError("extra_rollouts must be >= 0")
        if isinstance(self.acceptance, str):
            raise ValueError("acceptance must be a list of methods, not one method")
        self.acceptance = list(self.acceptance)
        unknown = [m for m in self.acceptance if m not in ACCEPTANCE_METHODS]
        if unknown:
            raise ValueError(
                f"acceptance methods must be among {ACCEPTANCE_METHODS}, got {unknown!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["search"] = self.search.to_dict()
        return data


@dataclass
class EvolutionConfig:
    """A whole self-evolution run; keys mirror the dataclasses so a YAML file maps onto it.

    ``validation``: JSONL of problems with reference answers on which rounds with
    ``acceptance`` measure their trained policy. Keep it apart from the problems you report
    results on: choosing policies on those would overstate them.
    """

    problems: str
    base_policy: str
    rounds: list[RoundConfig] = field(default_factory=list)
    validation: str | None = None
    backend: str = "hf"
    device: str | None = None
    few_shots: list[str] = field(default_factory=list)
    chunk_size: int = 32
    seed: int = 0
    executor: str = "sandbox"
    executor_kwargs: dict[str, Any] = field(default_factory=dict)
    generator_kwargs: dict[str, Any] = field(default_factory=dict)
    show_progress: bool = True
    #: Spread tree generation over this many Ray actors (0: in this process). Needs ray.init().
    ray_actors: int = 0
    ray_actor_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rounds = [RoundConfig(**r) if isinstance(r, dict) else r for r in self.rounds]
        if not self.rounds:
            raise ValueError("an evolution run needs at least one round")
        if self.rounds[0].policy is None:
            raise ValueError("round 1 needs an explicit policy (the bootstrap model)")
        checked = [i + 1 for i, r in enumerate(self.rounds) if r.acceptance]
        if checked and not self.validation:
            raise ValueError(
                f"rounds {checked} have an acceptance check but the run has no validation "
                "problems (set validation to a JSONL file)"
            )

    @classmethod
    def paper(
        cls,
        problems: str,
        base_policy: str,
        bootstrap_policy: str | None = None,
        rounds: int = 4,
        **overrides: Any,
    ) -> EvolutionConfig:
        """The paper's four rounds (fewer with ``rounds``)."""
        presets = [
            RoundConfig(
                search=SearchConfig.paper_bootstrap(),
                policy=bootstrap_policy or base_policy,
                prompt="few_shot",
                train_ppm=True,
            ),
            RoundConfig(search=SearchConfig.paper_sampling(num_rollouts=16)),
            RoundConfig(
                search=SearchConfig.paper_sampling(num_rollouts=16), use_ppm=True, extra_rollouts=64
            ),
            RoundConfig(
                search=SearchConfig.paper_sampling(num_rollouts=16),
                use_ppm=True,
                extra_rollouts=128,
            ),
        ]
        return cls(problems=problems, base_policy=base_policy, rounds=presets[:rounds], **overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvolutionConfig:
        check_keys(cls, data, "evolution")
        for i, r in enumerate(data.get("rounds", [])):
            if isinstance(r, dict):
                check_keys(RoundConfig, r, where=f"rounds[{i}]: ")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["rounds"] = [r.to_dict() for r in self.rounds]
        return data


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class EvolutionRunner:
    """Runs (or resumes) the rounds of an :class:`EvolutionConfig` in ``run_dir``."""

    def __init__(self, config: EvolutionConfig, run_dir: str | os.PathLike[str]) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = self._load_manifest()

    # ------------------------------------------------------------------ manifest

    def _load_manifest(self) -> dict[str, Any]:
        path = self.run_dir / MANIFEST
        if path.exists():
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if manifest.get("config") != json.loads(json.dumps(self.config.to_dict())):
                logger.warning(
                    "%s: the config differs from the one the run started with; finished stages "
                    "are kept, the rest use the new config",
                    path,
                )
            manifest["config"] = self.config.to_dict()
            return manifest
        return {"config": self.config.to_dict(), "rounds": {}, "created": time.time()}

    def _save_manifest(self) -> None:
        _write_json_atomic(self.run_dir / MANIFEST, self.manifest)

    def _round_state(self, name: str) -> dict[str, Any]:
        return self.manifest["rounds"].setdefault(name, {"stages": {}})

    def _stage_done(self, name: str, stage: str) -> bool:
        return stage in self._round_state(name)["stages"]

    def _finish_stage(self, name: str, stage: str, **info: Any) -> None:
        self._round_state(name)["stages"][stage] = {"finished": time.time(), **info}
        self._save_manifest()

    # ------------------------------------------------------------------ running

    def round_dir(self, index: int) -> Path:
        return self.run_dir / f"round_{index + 1}"

    def _trained(self, index: int, stage: str) -> str | None:
        info = self._round_state(f"round_{index + 1}")["stages"].get(stage)
        return info.get("model_dir") if info else None

    def kept_policy(self, index: int) -> str | None:
        """Round ``index``'s trained policy unless its acceptance check rejected it."""
        accept = self._round_state(f"round_{index + 1}")["stages"].get("accept")
        if accept is not None and not accept.get("accepted", True):
            return None
        return self._trained(index, "train_sft")

    def _latest_kept_before(self, index: int) -> str:
        for prev in range(index - 1, -1, -1):
            kept = self.kept_policy(prev)
            if kept:
                return kept
        return self.config.base_policy

    def policy_of(self, index: int) -> str:
        """The policy that generates round ``index``'s trees: the latest one kept before it."""
        rnd = self.config.rounds[index]
        if rnd.policy is not None:
            return rnd.policy
        return self._latest_kept_before(index)

    def ppm_of(self, index: int) -> str | None:
        """The PPM that guides round ``index`` (the latest trained before it)."""
        for prev in range(index - 1, -1, -1):
            trained = self._trained(prev, "train_ppm")
            if trained:
                return trained
        return None

    def final_policy(self) -> str:
        """The latest policy any round trained and kept (the base policy when there is none)."""
        return self._latest_kept_before(len(self.config.rounds))

    def final_ppm(self) -> str | None:
        """The latest PPM any round trained, or None."""
        return self.ppm_of(len(self.config.rounds))

    def spec_of(self, index: int, search: SearchConfig | None = None) -> SolverSpec:
        rnd = self.config.rounds[index]
        cfg = self.config
        ppm = self.ppm_of(index) if rnd.use_ppm else None
        if rnd.use_ppm and ppm is None:
            raise ValueError(f"round {index + 1} uses a PPM but no earlier round trains one")
        search = search or rnd.search
        return SolverSpec(
            policy=self.policy_of(index),
            backend=cfg.backend,  # type: ignore[arg-type]
            ppm=ppm,
            search=search.replace(seed=cfg.seed + index),
            prompt=rnd.prompt,
            few_shots=list(cfg.few_shots),
            device=cfg.device,
            generator_kwargs=dict(cfg.generator_kwargs),
            executor=cfg.executor,
            executor_kwargs=dict(cfg.executor_kwargs),
        )

    def problems(self) -> list[Problem]:
        problems = load_problems(self.config.problems)
        missing = [p.id for p in problems if p.answer is None]
        if missing:
            raise ValueError(
                f"{self.config.problems}: problems without reference answers ({missing[:5]}...); "
                "self-evolution grades terminal answers against references"
            )
        return problems

    def run(self, rounds: int | None = None) -> dict[str, Any]:
        """Run every round (or the first ``rounds``); returns the manifest."""
        problems = self.problems()
        count = len(self.config.rounds) if rounds is None else rounds
        for index in range(count):
            self.run_round(index, problems)
        return self.manifest

    def run_round(self, index: int, problems: list[Problem]) -> None:
        name = f"round_{index + 1}"
        rnd = self.config.rounds[index]
        rdir = self.round_dir(index)
        rdir.mkdir(parents=True, exist_ok=True)
        if rnd.train_policy and not self._stage_done(name, "train_sft"):
            # before hours of search, not after
            for path in rnd.sft_mix:
                if not Path(path).is_file():
                    raise FileNotFoundError(f"{name}: sft_mix file not found: {path}")
        if rnd.train_ppm and not self._stage_done(name, "train_ppm"):
            for path in rnd.ppm_mix:
                if not Path(path).is_file():
                    raise FileNotFoundError(f"{name}: ppm_mix file not found: {path}")
            if rnd.ppm_init is not None and not (Path(rnd.ppm_init) / "config.json").is_file():
                raise FileNotFoundError(
                    f"{name}: ppm_init is not a model directory (no config.json): {rnd.ppm_init}"
                )
        state = self._round_state(name)
        state["policy"] = self.policy_of(index)
        state["ppm_used"] = self.ppm_of(index) if rnd.use_ppm else None
        self._save_manifest()

        if not self._stage_done(name, "generate"):
            t0 = time.perf_counter()
            self._generate(index, problems, rdir / "trees.jsonl")
            records = list(read_problem_records(rdir / "trees.jsonl"))
            self._finish_stage(
                name,
                "generate",
                problems=len(records),
                solved=sum(1 for r in records if r.correct),
                seconds=time.perf_counter() - t0,
            )

        if not self._stage_done(name, "generate_extra"):
            solved = {r.problem_id for r in read_problem_records(rdir / "trees.jsonl") if r.correct}
            unsolved = [p for p in problems if p.id not in solved]
            if rnd.extra_rollouts and unsolved:
                search = rnd.search.replace(num_rollouts=rnd.extra_rollouts)
                self._generate(index, unsolved, rdir / "trees_extra.jsonl", search)
            self._finish_stage(
                name, "generate_extra", problems=len(unsolved) * bool(rnd.extra_rollouts)
            )

        if not self._stage_done(name, "extract"):
            counts = self._extract(rnd, rdir)
            self._finish_stage(name, "extract", **counts)
        counts = self._round_state(name)["stages"]["extract"]

        if (
            rnd.train_policy
            and not self._stage_done(name, "train_sft")
            and not counts["sft_records"]
        ):
            logger.warning("%s: no correct trajectory to fine-tune on; the policy is kept", name)
            self._finish_stage(name, "train_sft", skipped="no SFT records")
        if rnd.train_ppm and not self._stage_done(name, "train_ppm") and not counts["pairs"]:
            logger.warning("%s: no preference pairs; no PPM is trained this round", name)
            self._finish_stage(name, "train_ppm", skipped="no preference pairs")

        if rnd.train_policy and not self._stage_done(name, "train_sft"):
            from rstar_math.training import SFTTrainingConfig, read_sft_records, train_sft

            base = self.config.base_policy if rnd.sft_from == "base" else self.policy_of(index)
            sft_cfg = SFTTrainingConfig.from_dict(
                {
                    "seed": self.config.seed + index,
                    "progress": self.config.show_progress,
                    **rnd.sft,
                    "output_dir": str(rdir / "policy"),
                    "resume": True,
                }
            )
            records = list(read_sft_records(rdir / "sft.jsonl"))
            for path in rnd.sft_mix:
                records.extend(read_sft_records(path))
            result = train_sft(base, records, sft_cfg)
            self._finish_stage(
                name,
                "train_sft",
                model_dir=str(result.model_dir),
                records=len(records),
                steps=result.global_step,
                final_eval_loss=result.final_eval_loss,
            )

        if rnd.acceptance and not self._stage_done(name, "accept"):
            candidate = self._trained(index, "train_sft")
            if candidate:
                self._finish_stage(name, "accept", **self._acceptance(index, candidate))

        if rnd.train_ppm and not self._stage_done(name, "train_ppm"):
            from rstar_math.training import PPMTrainingConfig, read_pairs, train_ppm

            # the policy the run continues with: a rejected one would hand its PPM the very
            # weights the check found worse
            rejected = self._trained(index, "train_sft") and not self.kept_policy(index)
            start = (
                rnd.ppm_init
                or self.kept_policy(index)
                or (self._latest_kept_before(index) if rejected else self.policy_of(index))
            )
            ppm_cfg = PPMTrainingConfig.from_dict(
                {
                    "seed": self.config.seed + index,
                    "progress": self.config.show_progress,
                    **rnd.ppm,
                    "output_dir": str(rdir / "ppm"),
                    "resume": True,
                }
            )
            pairs = list(read_pairs(rdir / "pairs.jsonl"))
            for path in rnd.ppm_mix:
                pairs.extend(read_pairs(path))
            ppm_result = train_ppm(start, pairs, ppm_cfg)
            self._finish_stage(
                name,
                "train_ppm",
                model_dir=str(ppm_result.model_dir),
                pairs=len(pairs),
                initialised_from=start,
                steps=ppm_result.global_step,
                final_accuracy=ppm_result.final_accuracy,
            )

    def validation_problems(self) -> list[Problem]:
        """The problems of the acceptance check (``EvolutionConfig.validation``)."""
        if not self.config.validation:
            raise ValueError("the run has no validation problems")
        problems = load_problems(self.config.validation)
        missing = [p.id for p in problems if p.answer is None]
        if not problems or missing:
            raise ValueError(
                f"{self.config.validation}: the acceptance check needs validation problems "
                f"with reference answers (without one: {missing[:5]})"
            )
        return problems

    def _acceptance_spec(self, index: int, policy: str, method: str) -> SolverSpec:
        """How ``policy`` is measured: trained policies are model directories, so a run on a
        ``factory`` or server backend measures them with transformers."""
        rnd = self.config.rounds[index]
        cfg = self.config
        seed = cfg.seed + index
        if method == "greedy":
            search = rnd.search.replace(algorithm="greedy", seed=seed)
        else:
            search = rnd.search.replace(unvisited="inf", answer_selection="majority", seed=seed)
        backend = cfg.backend if cfg.backend in ("hf", "vllm") else "hf"
        return SolverSpec(
            policy=policy,
            backend=backend,  # type: ignore[arg-type]
            search=search,
            prompt="sft",
            device=cfg.device,
            generator_kwargs=dict(cfg.generator_kwargs) if backend == cfg.backend else {},
            executor=cfg.executor,
            executor_kwargs=dict(cfg.executor_kwargs),
        )

    def _accuracy(self, index: int, policy: str, method: str, results: Path) -> float:
        """Accuracy of ``policy`` on the validation problems (resumable through ``results``)."""
        from rstar_math.evolution.evaluate import evaluate

        with self._acceptance_spec(index, policy, method).build() as solver:
            report = evaluate(
                solver,
                self.validation_problems(),
                ks=(_ALL_TRAJECTORIES,),
                results_path=results,
                chunk_size=self.config.chunk_size,
                show_progress=self.config.show_progress,
            )
        return report.accuracy["majority"][_ALL_TRAJECTORIES]

    def _acceptance(self, index: int, candidate: str) -> dict[str, Any]:
        """Measure the round's trained policy against the one it would replace."""
        name = f"round_{index + 1}"
        rnd = self.config.rounds[index]
        incumbent = self._latest_kept_before(index)
        adir = self.round_dir(index) / "accept"
        t0 = time.perf_counter()
        methods: dict[str, dict[str, float]] = {}
        for method in rnd.acceptance:
            methods[method] = {
                "candidate": self._accuracy(
                    index, candidate, method, adir / f"candidate_{method}.jsonl"
                ),
                "incumbent": self._accuracy(
                    index, incumbent, method, adir / f"incumbent_{method}.jsonl"
                ),
            }
        accepted = all(m["candidate"] >= m["incumbent"] for m in methods.values())
        logger.info(
            "%s: trained policy %s (on %d validation problems, %s)",
            name,
            "kept" if accepted else "rejected; the run continues with " + incumbent,
            len(self.validation_problems()),
            "; ".join(
                f"{m}: {v['candidate']:.1%} against {v['incumbent']:.1%}"
                for m, v in methods.items()
            ),
        )
        return {
            "accepted": accepted,
            "candidate": candidate,
            "incumbent": incumbent,
            "methods": methods,
            "problems": len(self.validation_problems()),
            "seconds": time.perf_counter() - t0,
        }

    def _generate(
        self,
        index: int,
        problems: list[Problem],
        out: Path,
        search: SearchConfig | None = None,
    ) -> None:
        """Search the problems not yet in ``out``; no model is loaded when none is left."""
        from rstar_math.evolution.generate import completed_ids

        done = completed_ids(out)
        if all(p.id in done for p in problems):
            return
        spec = self.spec_of(index, search)
        if self.config.ray_actors > 0:
            from rstar_math._deps import require
            from rstar_math.evolution.distributed import generate_trees_ray

            ray = require("ray", "ray")
            if not ray.is_initialized():
                # RAY_ADDRESS (if set) joins an existing cluster; otherwise a local instance
                ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False)
            generate_trees_ray(
                spec,
                problems,
                out,
                num_actors=self.config.ray_actors,
                chunk_size=self.config.chunk_size,
                actor_options=self.config.ray_actor_options,
            )
            return
        with spec.build() as solver:
            generate_trees(
                solver,
                problems,
                out,
                chunk_size=self.config.chunk_size,
                show_progress=self.config.show_progress,
            )

    def _extract(self, rnd: RoundConfig, rdir: Path) -> dict[str, int]:
        from rstar_math.training import JsonlWriter, extract_pairs, select_sft

        sft_tmp, pairs_tmp = rdir / "sft.jsonl.tmp", rdir / "pairs.jsonl.tmp"
        n_sft = n_pairs = 0
        with JsonlWriter(sft_tmp) as sft_out, JsonlWriter(pairs_tmp) as pair_out:
            for path in (rdir / "trees.jsonl", rdir / "trees_extra.jsonl"):
                for record in read_problem_records(path):
                    for tree in record.trees:
                        for sft in select_sft(tree, k=rnd.sft_k):
                            sft_out.write(sft)
                            n_sft += 1
                        for pair in extract_pairs(
                            tree,
                            num_pos=rnd.pairs_pos,
                            num_neg=rnd.pairs_neg,
                            min_margin=rnd.pairs_margin,
                        ):
                            pair_out.write(pair)
                            n_pairs += 1
        os.replace(sft_tmp, rdir / "sft.jsonl")
        os.replace(pairs_tmp, rdir / "pairs.jsonl")
        return {"sft_records": n_sft, "pairs": n_pairs}
