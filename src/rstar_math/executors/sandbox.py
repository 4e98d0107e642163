"""``SandboxExecutor``: the default executor: restricted, resource-limited, incremental.

How the pieces fit (the worker side is described in ``worker.py``, the policy in
``policy.py``):

* A bounded pool of worker processes, each a *fresh* interpreter (``python -c`` bootstrap that
  loads ``policy``/``protocol``/``worker`` from this directory as a private package, so it
  never imports ``rstar_math`` or anything the user's process has loaded).
* Each worker caches interpreter states per context prefix (forked holder processes). The
  executor mirrors which prefixes every worker holds (the worker reports them after each job)
  and routes each request to the worker holding the longest prefix of its context (affinity);
  idle workers steal the remaining jobs rather than wait, paying one re-execution of the
  context, after which they hold it too. Any state can disappear (LRU eviction, crash): the
  worker then re-executes from the longest prefix it still has, transparently.
* One job at a time per worker; the worker enforces the wall-clock timeout by killing the job's
  process group, so a stuck job costs its own timeout only. The executor keeps a coarser
  back-stop deadline per job and replaces a worker that dies or stops answering; a job that was
  running on it is reported (``SandboxError`` or ``timed_out``), never retried (a job that kills
  workers would otherwise kill them all).
* ``close()`` (also via the context manager, garbage collection or interpreter exit, through
  ``weakref.finalize``) stops every worker (each kills and reaps its whole process tree) and
  removes the private working directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pwd
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rstar_math.executors import protocol
from rstar_math.executors.limits import SandboxLimits
from rstar_math.interfaces import ExecRequest, ExecResult

__all__ = ["ExecutorStats", "SandboxExecutor"]

_LOG = logging.getLogger(__name__)

_PACKAGE_DIR = str(Path(__file__).resolve().parent)

# Loads policy/protocol/worker from the executors directory as the private package
# ``_rstar_sandbox`` (no import of ``rstar_math`` and its heavy dependencies in the worker).
_BOOTSTRAP = (
    "import sys, types\n"
    "sys.path[:] = [p for p in sys.path if p]\n"
    "pkg = types.ModuleType('_rstar_sandbox')\n"
    "pkg.__path__ = [sys.argv[1]]\n"
    "sys.modules['_rstar_sandbox'] = pkg\n"
    "from _rstar_sandbox import worker\n"
    "worker.main(sys.argv[2])\n"
)

_STARTUP_TIMEOUT_S = 120.0
_MAX_STARTUP_FAILURES = 3
_THREAD_ENV = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "GOTO_NUM_THREADS",
)


@dataclass
class ExecutorStats:
    """Counters since the executor started (useful to check that state is reused).

    ``replayed_blocks`` counts context blocks that had to be re-executed because no worker
    held their state; ``cache_hits`` counts requests with a non-empty context that ran with
    none replayed.
    """

    requests: int = 0
    cache_hits: int = 0
    replayed_blocks: int = 0
    timeouts: int = 0
    worker_restarts: int = 0


@dataclass
class _Job:
    index: int
    request: ExecRequest
    keys: list[str]
    deadline_budget_s: float


class _Worker:
    """The executor's handle on one worker process."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock
        self.ready = False
        self.started_at = time.monotonic()
        self.held: set[str] = set()
        self.job: _Job | None = None
        self.deadline = float("inf")
        self.request_id = 0
        self.started = False  # the worker acknowledged the current job

    def affinity(self, job: _Job) -> int:
        for i in range(len(job.keys) - 1, 0, -1):
            if job.keys[i] in self.held:
                return i
        return 0

    def stop(self, graceful: bool = True) -> None:
        """Ask the worker to clean up its process tree, then make sure it is gone and reaped."""
        if graceful and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                protocol.send_msg(self.sock, {"op": "shutdown"})
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=6.0)
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            _LOG.warning("sandbox worker %d did not exit after SIGKILL", self.proc.pid)
        self.sock.close()


def _stop_all(workers: list[_Worker], workdir: str, owner_pid: int) -> None:
    if os.getpid() != owner_pid:
        # a forked copy of the owning process (e.g. a multiprocessing child) must not stop
        # the owner's workers or delete its directory
        workers.clear()
        return
    for worker in workers:
        try:
            worker.stop(graceful=True)
        except Exception:  # cleanup must go on for the others
            _LOG.debug("error while stopping a sandbox worker", exc_info=True)
    workers.clear()
    shutil.rmtree(workdir, ignore_errors=True)


class SandboxExecutor:
    """Runs steps' Python in sandboxed worker processes, reusing interpreter state per prefix.

    Args:
        limits: resource limits (:class:`SandboxLimits`); safe defaults.
        num_workers: size of the worker pool (default: the CPU count, at most 8).
        timeout_s: shortcut for ``limits.timeout_s``.
        max_states_per_worker: interpreter states (one idle process each) a worker keeps.
        max_state_bytes: a state whose process holds more anonymous memory than this is not
            kept (its children re-execute it instead), so a few big arrays cannot pin
            ``max_states_per_worker`` times their size.
        incremental: keep states per context prefix (default). ``False`` re-runs the whole
            context for every request in a warm worker (useful as a baseline).

    ``execute_batch`` is thread-safe (calls are serialised). Use as a context manager or call
    :meth:`close`; an executor that is garbage collected is closed too.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        num_workers: int | None = None,
        *,
        timeout_s: float | None = None,
        max_states_per_worker: int = 32,
        max_state_bytes: int = 512 * 1024**2,
        incremental: bool = True,
    ) -> None:
        limits = limits if limits is not None else SandboxLimits()
        if timeout_s is not None:
            limits = limits.with_timeout(timeout_s)
        if num_workers is None:
            num_workers = max(1, min(os.cpu_count() or 1, 8))
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if max_states_per_worker < 0:
            raise ValueError(f"max_states_per_worker must be >= 0, got {max_states_per_worker}")
        self.limits = limits
        self.num_workers = num_workers
        self.max_states_per_worker = max_states_per_worker
        self.max_state_bytes = max_state_bytes
        self.incremental = incremental
        self._lock = threading.Lock()
        self._closed = False
        self._stats = ExecutorStats()
        self._startup_failures = 0
        self._last_failure = ""
        self._uid, self._gid = self._sandbox_user()
        self.workdir = tempfile.mkdtemp(prefix="rstar-sandbox-")
        if self._uid is not None:
            os.chown(self.workdir, self._uid, self._gid if self._gid is not None else -1)
        os.chmod(self.workdir, 0o700)
        self._workers: list[_Worker] = []
        self._finalizer = weakref.finalize(
            self, _stop_all, self._workers, self.workdir, os.getpid()
        )
        for _ in range(num_workers):
            self._workers.append(self._spawn())

    # ------------------------------------------------------------------ public API

    def execute_batch(self, requests: Sequence[ExecRequest]) -> list[ExecResult]:
        """Run every request (see :class:`~rstar_math.interfaces.ExecRequest`); results in
        order. One request's failure, timeout or crash never affects the others."""
        for request in requests:
            if not isinstance(request, ExecRequest):
                raise TypeError(f"expected ExecRequest, got {type(request).__name__}")
            if not isinstance(request.code, str) or not all(
                isinstance(block, str) for block in request.context
            ):
                raise TypeError("ExecRequest.code and .context must be str")
        with self._lock:
            if self._closed:
                raise RuntimeError("this SandboxExecutor is closed")
            return self._run_batch(list(requests))

    def execute(self, code: str) -> ExecResult:
        """Run one program from a fresh state."""
        return self.execute_batch([ExecRequest(code)])[0]

    @property
    def stats(self) -> ExecutorStats:
        """A copy of the executor's counters."""
        return dataclasses.replace(self._stats)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the current worker processes (not their forked descendants)."""
        return [worker.proc.pid for worker in self._workers]

    def close(self) -> None:
        """Stop every worker and its process tree and remove the working directory."""
        with self._lock:
            self._closed = True
            self._finalizer()

    def __enter__(self) -> SandboxExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None and finalizer.alive:
            finalizer()

    # ------------------------------------------------------------------ workers

    def _sandbox_user(self) -> tuple[int | None, int | None]:
        if os.geteuid() != 0 or self.limits.user is None:
            if os.geteuid() == 0:
                _LOG.warning("sandbox runs as root without dropping privileges (user=None)")
            return None, None
        try:
            entry = pwd.getpwnam(self.limits.user)
        except KeyError:
            if self.limits.user != "nobody":
                raise
            return 65534, 65534
        return entry.pw_uid, entry.pw_gid

    def _env(self) -> dict[str, str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": self.workdir,
            "TMPDIR": self.workdir,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
        for name in _THREAD_ENV:
            env[name] = "1"
        return env

    def _spawn(self) -> _Worker:
        parent_end, child_end = socket.socketpair()
        limits = dataclasses.asdict(self.limits)
        limits["preload"] = list(self.limits.preload)
        config = {
            "fd": child_end.fileno(),
            "workdir": self.workdir,
            "uid": self._uid,
            "gid": self._gid,
            "limits": limits,
            "max_states": self.max_states_per_worker,
            "max_state_bytes": self.max_state_bytes,
            "incremental": self.incremental,
        }
        try:
            proc = subprocess.Popen(
                [sys.executable, "-B", "-c", _BOOTSTRAP, _PACKAGE_DIR, json.dumps(config)],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd=self.workdir,
                env=self._env(),
                start_new_session=True,
            )
        finally:
            child_end.close()
        return _Worker(proc, parent_end)

    def _replace(self, worker: _Worker, reason: str) -> None:
        _LOG.info("replacing sandbox worker %d: %s", worker.proc.pid, reason)
        if not worker.ready:
            self._startup_failures += 1
            self._last_failure = reason
        worker.stop(graceful=False)
        index = self._workers.index(worker)
        self._stats.worker_restarts += 1
        if self._startup_failures >= _MAX_STARTUP_FAILURES:
            raise RuntimeError(
                f"sandbox workers fail to start ({self._last_failure}); see the log above"
            )
        self._workers[index] = self._spawn()

    # ------------------------------------------------------------------ scheduling

    def _job_budget(self, request: ExecRequest) -> float:
        # Back-stop only: the worker kills a job at timeout_s per block; this catches a worker
        # that stops answering altogether.
        blocks = len(request.context) + 1
        return 2 * self.limits.timeout_s * (blocks + 1) + 30.0

    def _pick(self, worker: _Worker, pending: list[int], jobs: list[_Job]) -> int:
        others = [w for w in self._workers if w is not worker]
        best_pos, best_score = 0, None
        for pos, index in enumerate(pending[:256]):
            job = jobs[index]
            mine = worker.affinity(job)
            theirs = max((w.affinity(job) for w in others), default=0)
            score = (mine >= theirs, mine, -pos)
            if best_score is None or score > best_score:
                best_pos, best_score = pos, score
        return pending.pop(best_pos)

    def _dispatch(self, worker: _Worker, job: _Job) -> None:
        worker.request_id += 1
        worker.job = job
        worker.started = False
        worker.deadline = time.monotonic() + job.deadline_budget_s
        message = {
            "op": "run",
            "id": worker.request_id,
            "context": list(job.request.context),
            "code": job.request.code,
        }
        with contextlib.suppress(OSError):  # a dead worker is noticed by the poll loop
            protocol.send_msg(worker.sock, message)

    def _run_batch(self, requests: list[ExecRequest]) -> list[ExecResult]:
        jobs = [
            _Job(i, r, protocol.chain_keys(r.context), self._job_budget(r))
            for i, r in enumerate(requests)
        ]
        results: list[ExecResult | None] = [None] * len(jobs)
        pending = list(range(len(jobs)))
        self._stats.requests += len(jobs)
        while pending or any(w.job is not None for w in self._workers):
            for worker in list(self._workers):
                if not (pending and worker.ready and worker.job is None):
                    continue
                if worker.proc.poll() is not None:  # died while idle: nothing lost
                    self._replace(worker, f"exited with status {worker.proc.returncode}")
                    continue
                self._dispatch(worker, jobs[self._pick(worker, pending, jobs)])
            self._poll(results, pending)
        return [r if r is not None else ExecResult(error_type="SandboxError") for r in results]

    def _poll(self, results: list[ExecResult | None], pending: list[int]) -> None:
        now = time.monotonic()
        wait = 0.5
        for worker in self._workers:
            limit = worker.deadline if worker.ready else worker.started_at + _STARTUP_TIMEOUT_S
            wait = min(wait, max(0.0, limit - now))
        socks = {worker.sock: worker for worker in self._workers}
        readable, _, _ = select.select(list(socks), [], [], wait)
        for sock in readable:
            worker = socks[sock]
            try:
                sock.settimeout(60.0)
                msg = protocol.recv_msg(sock)
            except (OSError, protocol.ProtocolError) as exc:
                msg = {"op": "failed", "error": f"{type(exc).__name__}: {exc}"}
            if msg is None:
                msg = {"op": "failed", "error": "worker exited"}
            self._handle(worker, msg, results, pending)
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.ready and worker.job is not None and now > worker.deadline:
                self._finish(worker, results, _backstop_timeout(self.limits.timeout_s))
                self._replace(worker, "stopped answering")
            elif not worker.ready and now > worker.started_at + _STARTUP_TIMEOUT_S:
                self._replace(worker, "startup timed out")

    def _handle(
        self, worker: _Worker, msg: Any, results: list[ExecResult | None], pending: list[int]
    ) -> None:
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "ready":
            worker.ready = True
            self._startup_failures = 0
        elif op == "started" and msg.get("id") == worker.request_id:
            worker.started = True
        elif op == "result" and worker.job is not None and msg.get("id") == worker.request_id:
            held = msg.get("held")
            if isinstance(held, list):
                worker.held = {key for key in held if isinstance(key, str)}
            replayed = msg.get("replayed")
            if isinstance(replayed, int) and replayed >= 0:
                self._stats.replayed_blocks += replayed
                if replayed == 0 and worker.job.request.context:
                    self._stats.cache_hits += 1
            self._finish(worker, results, _to_result(msg.get("result")))
        else:
            error = msg.get("error") if isinstance(msg, dict) else None
            reason = str(error) if error else f"unexpected message {op!r}"
            if worker.job is not None and not worker.started:
                # the worker died before it began this job (e.g. it was killed while idle):
                # the job never ran, so it can safely go to another worker
                pending.insert(0, worker.job.index)
                worker.job = None
            elif worker.job is not None:
                self._finish(
                    worker,
                    results,
                    ExecResult(
                        error_type="SandboxError",
                        error_message=f"the sandbox worker died while running this step ({reason})",
                    ),
                )
            self._replace(worker, reason)

    def _finish(
        self, worker: _Worker, results: list[ExecResult | None], result: ExecResult
    ) -> None:
        job = worker.job
        worker.job = None
        worker.deadline = float("inf")
        if job is None:
            return
        if result.timed_out:
            self._stats.timeouts += 1
        results[job.index] = result


def _backstop_timeout(timeout_s: float) -> ExecResult:
    return ExecResult(
        error_type="TimeoutError",
        error_message=f"the step exceeded the wall-clock limit of {timeout_s:g} s",
        timed_out=True,
    )


def _to_result(raw: Any) -> ExecResult:
    """Build an ExecResult from a worker's (untrusted) reply."""
    if not isinstance(raw, dict):
        return ExecResult(error_type="SandboxError", error_message="malformed worker reply")
    stdout = raw.get("stdout")
    error_type = raw.get("error_type")
    error_message = raw.get("error_message")
    return ExecResult(
        stdout=stdout if isinstance(stdout, str) else "",
        error_type=error_type if isinstance(error_type, str) else None,
        error_message=error_message if isinstance(error_message, str) else None,
        timed_out=raw.get("timed_out") is True,
        memory_exceeded=raw.get("memory_exceeded") is True,
    )
