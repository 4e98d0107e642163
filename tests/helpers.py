"""Test neighbours: a trivial in-process executor and a function scorer.

These stand in for the sandbox and the PPM in tests of the *search*, where the unit under test is
the tree arithmetic, not code execution or model scoring (those have their own real tests).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence

from rstar_math.interfaces import ExecRequest, ExecResult, ScoreRequest


class InProcessExecutor:
    """Runs trusted test snippets with ``exec``; never use it on model output."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def execute_batch(self, requests: Sequence[ExecRequest]) -> list[ExecResult]:
        self.batches.append(len(requests))
        out = []
        for req in requests:
            ns: dict[str, object] = {}
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    exec("\n".join(req.context), ns)
                except Exception as exc:
                    out.append(ExecResult(error_type=type(exc).__name__, error_message=str(exc)))
                    continue
            buf = io.StringIO()
            try:
                with contextlib.redirect_stdout(buf):
                    exec(req.code, ns)
            except Exception as exc:
                out.append(
                    ExecResult(
                        stdout=buf.getvalue(), error_type=type(exc).__name__, error_message=str(exc)
                    )
                )
                continue
            out.append(ExecResult(stdout=buf.getvalue()))
        return out

    def close(self) -> None:
        pass


class FunctionScorer:
    """Scores ``"".join(steps)`` with a plain function."""

    def __init__(self, fn: Callable[[str], float]) -> None:
        self.fn = fn
        self.calls = 0
        self.seen: list[str] = []

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        self.calls += 1
        texts = ["".join(r.steps) for r in requests]
        self.seen.extend(texts)
        return [self.fn(t) for t in texts]
