"""``SubprocessExecutor``: the plain, unrestricted baseline.

Every request runs the concatenated program (``context`` blocks, then ``code``) in a fresh
``python -c`` process with a wall-clock timeout: what the rStar-Math reference does (re-run all
ancestors' code at every node), minus its text-matching error detection. It has **no sandbox**:
use it for trusted code, as a reference semantics in tests and as the baseline of
``benchmarks/executor.py``.

The program is compiled once as a whole (so syntax errors and scoping are those of the
concatenated program) and its top-level statements are split at the first line of ``code``:
the statements before run with stdout discarded, the rest with stdout captured. Errors are
reported by exception class, through a result record the runner writes after a marker on its
real stdout, never guessed from printed text.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from rstar_math.interfaces import ExecRequest, ExecResult

__all__ = ["SubprocessExecutor"]

_MARK = "\x1eRSTAR-EXEC-RESULT\x1e"

_RUNNER = r"""
import ast, builtins, json, sys

class _Sink:
    encoding = "utf-8"
    def write(self, s):
        if type(s) is not str:
            raise TypeError("write() argument must be str, not " + type(s).__name__)
        return len(s)
    def flush(self):
        pass
    def isatty(self):
        return False

class _Capture(_Sink):
    def __init__(self, limit):
        self.parts, self.size, self.limit, self.truncated = [], 0, limit, False
    def write(self, s):
        if type(s) is not str:
            raise TypeError("write() argument must be str, not " + type(s).__name__)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(s[:room])
            self.size += len(s[:room])
        if len(s) > max(room, 0):
            self.truncated = True
        return len(s)

def _main():
    req = json.loads(sys.stdin.read())
    blocks = list(req["context"]) + [req["code"]]
    boundary = sum(b.count("\n") + 1 for b in blocks[:-1]) + 1
    cap = _Capture(int(req["max_output_chars"]))
    res = {"error_type": None, "error_message": None, "memory_exceeded": False}
    ns = {"__name__": "__main__", "__doc__": None, "__builtins__": builtins}
    real_stdout = sys.stdout
    try:
        tree = ast.parse("\n".join(blocks), "<string>", "exec")
        pre = [n for n in tree.body if n.lineno < boundary]
        post = [n for n in tree.body if n.lineno >= boundary]
        sys.stdout = _Sink()
        exec(compile(ast.Module(body=pre, type_ignores=[]), "<string>", "exec"), ns)
        sys.stdout = cap
        exec(compile(ast.Module(body=post, type_ignores=[]), "<string>", "exec"), ns)
    except SystemExit as exc:
        if not (exc.code is None or exc.code == 0):
            res["error_type"], res["error_message"] = "SystemExit", str(exc.code)
    except BaseException as exc:
        if isinstance(exc, MemoryError):
            res["error_type"], res["memory_exceeded"] = "MemoryError", True
        else:
            res["error_type"] = type(exc).__name__
        if isinstance(exc, SyntaxError):
            res["error_message"] = "%s (line %s)" % (exc.msg, exc.lineno)
        else:
            res["error_message"] = str(exc)[:4000]
    finally:
        sys.stdout = real_stdout
    out = "".join(cap.parts)
    res["stdout"] = out + req["marker"] if cap.truncated else out
    real_stdout.write(MARK + json.dumps(res))
    real_stdout.flush()

MARK = sys.argv[1]
_main()
"""


class SubprocessExecutor:
    """Runs each request's whole program in a fresh Python process (no sandbox).

    Args:
        timeout_s: wall-clock limit per request (the whole program).
        num_workers: how many processes run at once (default: the CPU count).
        max_output_chars: stdout beyond this many characters is cut and ``output_marker`` added.
        python: the interpreter to run (default: this one).
    """

    def __init__(
        self,
        timeout_s: float = 10.0,
        num_workers: int | None = None,
        *,
        max_output_chars: int = 8192,
        output_marker: str = "\n...[output truncated]",
        python: str | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self.num_workers = num_workers or max(1, os.cpu_count() or 1)
        self.max_output_chars = max_output_chars
        self.output_marker = output_marker
        self.python = python or sys.executable
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=self.num_workers, thread_name_prefix="rstar-subprocess-exec"
        )
        env = dict(os.environ)
        env.update(
            {
                "PYTHONIOENCODING": "utf-8",
                "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
                "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
            }
        )
        self._env = env

    def execute_batch(self, requests: Sequence[ExecRequest]) -> list[ExecResult]:
        """Run every request in its own process, up to ``num_workers`` at a time."""
        if self._pool is None:
            raise RuntimeError("this SubprocessExecutor is closed")
        return list(self._pool.map(self._run_one, requests))

    def execute(self, code: str) -> ExecResult:
        """Run one program."""
        return self.execute_batch([ExecRequest(code)])[0]

    def _run_one(self, request: ExecRequest) -> ExecResult:
        payload = json.dumps(
            {
                "context": list(request.context),
                "code": request.code,
                "max_output_chars": self.max_output_chars,
                "marker": self.output_marker,
            }
        )
        proc = subprocess.Popen(
            [self.python, "-c", _RUNNER, _MARK],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self._env,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(payload.encode("utf-8", "surrogatepass"), self.timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return ExecResult(
                error_type="TimeoutError",
                error_message=f"the program exceeded the wall-clock limit of {self.timeout_s:g} s",
                timed_out=True,
            )
        text = out.decode("utf-8", "replace")
        position = text.rfind(_MARK)
        if position < 0:
            return ExecResult(
                error_type="ProcessError",
                error_message=f"the interpreter exited with status {proc.returncode} "
                "without reporting a result",
            )
        raw = json.loads(text[position + len(_MARK) :])
        return ExecResult(
            stdout=raw["stdout"],
            error_type=raw["error_type"],
            error_message=raw["error_message"],
            memory_exceeded=bool(raw["memory_exceeded"]),
        )

    def close(self) -> None:
        """Stop accepting work (no process outlives its request)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> SubprocessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
