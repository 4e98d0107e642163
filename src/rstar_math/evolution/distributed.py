"""Tree generation spread over Ray actors.

Each actor builds its own solver (generator, scorer, executor) from a :class:`SolverSpec`: on a
cluster, one actor per GPU (``actor_options={"num_gpus": 1}``). The driver streams chunks of
problems to the actors with back-pressure (at most ``max_in_flight`` chunks queued per actor),
writes every finished record itself (one writer, so the output file is never interleaved), and
when an actor dies its chunk is resubmitted to a fresh actor; nothing is lost and nothing is
written twice.

Without Ray installed, :func:`generate_trees_ray` is not needed: ``generate_trees`` runs the same
work in one process.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from rstar_math._deps import require
from rstar_math.data.loaders import Problem
from rstar_math.evolution.generate import (
    ProblemRecord,
    RecordWriter,
    _check_unique,
    completed_ids,
    solve_chunked,
)
from rstar_math.evolution.spec import SolverSpec

__all__ = ["RayTreeGenerator", "generate_trees_ray"]

logger = logging.getLogger(__name__)


class _SolverWorker:
    """Body of the Ray actor: holds one solver and solves chunks of problems."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.solver = SolverSpec.from_dict(spec).build()

    def solve(self, problems: list[dict[str, Any]], use_reference: bool) -> list[dict[str, Any]]:
        chunk = [Problem(**p) for p in problems]
        records: list[ProblemRecord] = []
        solve_chunked(self.solver, chunk, records.append, len(chunk) or 1, use_reference)
        return [r.to_dict() for r in records]

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.solver.close()


class RayTreeGenerator:
    """Distribute problems over ``num_actors`` Ray actors; see the module docstring."""

    def __init__(
        self,
        spec: SolverSpec,
        num_actors: int = 2,
        chunk_size: int = 8,
        max_in_flight: int = 2,
        max_retries: int = 3,
        actor_options: dict[str, Any] | None = None,
    ) -> None:
        self.ray = require("ray", "ray")
        if not self.ray.is_initialized():
            raise RuntimeError("call ray.init(...) (or connect to a cluster) before generating")
        if num_actors < 1 or chunk_size < 1 or max_in_flight < 1:
            raise ValueError("num_actors, chunk_size and max_in_flight must be >= 1")
        self.spec = spec
        self.num_actors = num_actors
        self.chunk_size = chunk_size
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.actor_options = dict(actor_options or {})
        self._actor_cls = self.ray.remote(_SolverWorker)
        self.actors: list[Any] = []
        self.replaced = 0

    def _new_actor(self) -> Any:
        return self._actor_cls.options(**self.actor_options).remote(self.spec.to_dict())

    def run(
        self,
        problems: Sequence[Problem],
        on_record: Callable[[ProblemRecord], None],
        use_reference: bool = True,
    ) -> None:
        """Solve every problem; ``on_record`` runs in the driver for each finished problem."""
        ray = self.ray
        chunks: deque[tuple[list[Problem], int]] = deque(
            (list(problems[i : i + self.chunk_size]), 0)
            for i in range(0, len(problems), self.chunk_size)
        )
        self.actors = [self._new_actor() for _ in range(self.num_actors)]
        in_flight: dict[Any, tuple[int, Any, list[Problem], int]] = {}
        load = [0] * len(self.actors)
        errors = (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError)

        def submit() -> None:
            while chunks:
                slot = min(range(len(self.actors)), key=lambda i: load[i])
                if load[slot] >= self.max_in_flight:
                    return
                chunk, attempts = chunks.popleft()
                actor = self.actors[slot]
                ref = actor.solve.remote([asdict(p) for p in chunk], use_reference)
                in_flight[ref] = (slot, actor, chunk, attempts)
                load[slot] += 1

        try:
            submit()
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                ref = ready[0]
                slot, actor, chunk, attempts = in_flight.pop(ref)
                load[slot] -= 1
                try:
                    records = ray.get(ref)
                except errors as exc:
                    if attempts >= self.max_retries:
                        raise RuntimeError(
                            f"a chunk of {len(chunk)} problems failed {attempts + 1} times "
                            f"(first id {chunk[0].id!r}): {exc}"
                        ) from exc
                    logger.warning(
                        "actor %d died (%s); resubmitting its %d problems", slot, exc, len(chunk)
                    )
                    if self.actors[slot] is actor:  # not yet replaced by an earlier failure
                        self.actors[slot] = self._new_actor()
                        self.replaced += 1
                    chunks.appendleft((chunk, attempts + 1))
                    submit()
                    continue
                for data in records:
                    on_record(ProblemRecord.from_dict(data))
                submit()
        finally:
            for actor in self.actors:
                try:
                    ray.kill(actor)
                except Exception:  # an actor that is already gone is fine
                    logger.debug("actor already gone", exc_info=True)


def generate_trees_ray(
    spec: SolverSpec,
    problems: Sequence[Problem],
    out_path: str | os.PathLike[str],
    num_actors: int = 2,
    chunk_size: int = 8,
    use_reference: bool = True,
    actor_options: dict[str, Any] | None = None,
    on_record: Callable[[ProblemRecord], None] | None = None,
) -> int:
    """Like :func:`~rstar_math.evolution.generate.generate_trees`, over Ray actors (resumable)."""
    _check_unique(problems)
    done = completed_ids(out_path)
    todo = [p for p in problems if p.id not in done]
    gen = RayTreeGenerator(spec, num_actors, chunk_size, actor_options=actor_options)
    with RecordWriter(out_path) as writer:

        def write(record: ProblemRecord) -> None:
            writer.write(record)
            if on_record is not None:
                on_record(record)

        gen.run(todo, write, use_reference)
    return len(todo)
