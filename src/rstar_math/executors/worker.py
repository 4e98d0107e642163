"""The sandbox worker process: a supervisor plus a tree of forked *state holders*.

Design (and why):

* **Why processes that hold state.** A step must behave as if all its ancestors' code ran
  before it in one interpreter, but re-running the ancestors costs O(depth) per step (the
  reference's approach). Interpreter state (namespaces full of sympy/numpy objects, closures,
  generators, open iterators) cannot be serialised or deep-copied reliably; ``os.fork`` copies
  it exactly, copy-on-write, in a few milliseconds. So every successful step leaves behind the
  process that ran it, idle, as the *holder* of the state "after this step"; running a child step
  means asking that holder to fork. Siblings are separate forks of the same holder and can never
  see each other's state. Per-step cost is one fork plus the step's own work, independent of
  depth.
* **Supervisor.** Each worker (one per pool slot) is a fresh interpreter started by the executor
  (never forked from the user's process, which may hold threads, GPUs or gigabytes). It imports
  numpy/sympy once, patches them (``policy.install_library_patches``), drops privileges, sets the
  resource limits every descendant inherits, forks the root holder (the empty state) and then
  serves requests one at a time. It keeps an LRU of holders keyed by the hash chain of the code
  blocks that produced their state (``protocol.chain_keys``); evicted holders simply exit.
* **Requests.** ``run(context, code)``: find the longest cached prefix of ``context``; if the
  whole context is not cached, fork from that prefix and re-run the missing blocks (a
  *materialisation*, itself kept as a holder so siblings reuse it); then fork from the context's
  holder and run ``code``, capturing only its stdout. If a block cannot be parsed on its own but
  the concatenated program can (a construct split across steps), the whole program is re-run as
  one unit from the empty state, which is exactly the concatenated program's semantics.
* **Containment** (the second line of defence, behind ``policy.py``). When started as root the
  supervisor enters a fresh network namespace (no network) and a private mount namespace
  (``/tmp``, ``/var/tmp``, ``/dev/shm`` become private empty tmpfs mounts with only the
  executor's working directory bound back; an unreadable ancestor of the Python installation,
  such as ``/root`` of a pyenv install, is covered likewise with only the installation bound
  back), then drops to the unprivileged user (``setgroups([])``, ``setgid``, ``setuid``;
  ``PR_SET_NO_NEW_PRIVS``). Descendants inherit ``RLIMIT_AS``, ``RLIMIT_FSIZE`` and
  ``RLIMIT_CORE=0``; each job adds ``RLIMIT_CPU``, ``RLIMIT_NOFILE`` and a *soft*
  ``RLIMIT_NPROC`` of 0 (no child processes while untrusted code runs; the trusted holder loop
  raises it back just to fork). Each job runs in its own process group, which the supervisor
  kills at the wall-clock deadline. The supervisor is a child subreaper with ``SIGCHLD``
  ignored, so nothing is left as a zombie; on shutdown it kills every holder and waits until it
  has no children left. A kept state whose process holds more than ``max_state_bytes`` of
  anonymous memory is dropped instead of kept.
* **Untrusted replies.** Everything a job process sends back is JSON, size-capped and
  type-checked; a job that dies without answering is reported as a crash, never trusted.

This module is loaded inside the worker outside the ``rstar_math`` package (see
``sandbox.py``), so it imports only the standard library and its sibling modules.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import logging
import math
import os
import resource
import select
import signal
import socket
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

from . import policy, protocol

_LOG = logging.getLogger("rstar_math.executors.worker")

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWNET = 0x40000000

#: Bytes a job process may send back (stdout is capped far below this).
_MAX_REPLY_BYTES = 8 << 20
_MAX_ERROR_CHARS = 4000


# =========================================================================== job side
# Everything below up to the supervisor runs in forked holder / job processes.


class _Sink:
    """Discarding stdout for context blocks that are replayed."""

    encoding = "utf-8"
    errors = "strict"

    def write(self, text: str) -> int:
        if type(text) is not str:
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        return len(text)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


class _Capture(_Sink):
    """stdout of the step, capped at ``limit`` characters (memory stays bounded even for a
    gigabyte of print)."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit
        self.truncated = False

    def write(self, text: str) -> int:
        if type(text) is not str:
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        room = self.limit - self.size
        if room > 0:
            piece = text[:room]
            self.parts.append(piece)
            self.size += len(piece)
        if len(text) > max(room, 0):
            self.truncated = True
        return len(text)

    def getvalue(self, marker: str) -> str:
        out = "".join(self.parts)
        return out + marker if self.truncated else out


@dataclass
class _State:
    """The interpreter state a holder keeps: the trajectory's global namespace."""

    namespace: dict[str, Any]
    exited: bool = False


def _line_starts(blocks: list[str]) -> list[int]:
    """First line of each block in ``"\\n".join(blocks)``."""
    starts, line = [], 1
    for block in blocks:
        starts.append(line)
        line += block.count("\n") + 1
    return starts


def _stack_depth() -> int:
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MemoryError):
        return {
            "error_type": "MemoryError",
            "error_message": str(exc)[:_MAX_ERROR_CHARS] or "out of memory",
            "memory_exceeded": True,
        }
    if isinstance(exc, SyntaxError):
        message = f"{exc.msg} (line {exc.lineno})" if exc.lineno else str(exc.msg)
    else:
        message = str(exc)
    return {"error_type": type(exc).__name__, "error_message": message[:_MAX_ERROR_CHARS]}


def _split_module(tree: Any, capture_from: int) -> tuple[Any, Any]:
    import ast

    pre = [node for node in tree.body if node.lineno < capture_from]
    post = [node for node in tree.body if node.lineno >= capture_from]
    return ast.Module(body=pre, type_ignores=[]), ast.Module(body=post, type_ignores=[])


def _exec_code(code: CodeType, namespace: dict[str, Any], out: Any) -> None:
    sys.stdout = out
    try:
        exec(code, namespace)
    finally:
        sys.stdout = _SINK


_SINK = _Sink()


def _prepare_job(job: dict[str, Any], n_units: int) -> None:
    """Limits that apply while untrusted code runs (see module docstring)."""
    soft_cpu = resource.getrusage(resource.RUSAGE_SELF)
    used = soft_cpu.ru_utime + soft_cpu.ru_stime
    budget = math.ceil(used + float(job["cpu_s"]) * max(1, n_units))
    _, hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)
    if hard_cpu != resource.RLIM_INFINITY:
        budget = min(budget, hard_cpu)
    resource.setrlimit(resource.RLIMIT_CPU, (budget, hard_cpu))
    _, hard_nproc = resource.getrlimit(resource.RLIMIT_NPROC)
    resource.setrlimit(resource.RLIMIT_NPROC, (0, hard_nproc))
    nofile = int(job["max_open_files"])
    _soft_nofile, hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard_nofile == resource.RLIM_INFINITY or nofile < hard_nofile:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        # like a fresh process (``random`` reseeds itself after fork)
        numpy.random.seed(int.from_bytes(os.urandom(4), "little"))
    sys.setrecursionlimit(1000 + _stack_depth() + 4)


def _execute(state: _State, job: dict[str, Any], conn: socket.socket) -> dict[str, Any]:
    """Run the job's blocks on ``state``; return the result message (without ``kept``)."""
    blocks: list[str] = list(job["blocks"])
    start: int = int(job["start"])
    capture_last: bool = bool(job["capture_last"])
    limit = int(job["max_output_chars"])
    marker = str(job["output_marker"])
    starts = _line_starts(blocks)
    last = len(blocks) - 1

    if job["mode"] == "joined":
        units = [("\n".join(blocks), 1, starts[last] if capture_last else None)]
    else:
        units = [
            (blocks[i], starts[i], starts[i] if capture_last and i == last else None)
            for i in range(start, len(blocks))
        ]
    capture = _Capture(limit)
    result: dict[str, Any] = {"op": "result"}
    if state.exited:
        result["stdout"] = ""
        return result
    _prepare_job(job, len(units))

    trees = []
    for source, first_line, _ in units:
        try:
            trees.append(policy.parse_block(source, first_line))
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            if job["mode"] == "joined":
                result.update(_error(exc), stdout="")
                return result
            try:
                policy.parse_block("\n".join(blocks))
            except (SyntaxError, ValueError, MemoryError, RecursionError) as full_exc:
                result.update(_error(full_exc), stdout="")
                return result
            result["needs_full"] = True
            return result

    for index, ((_, first_line, capture_from), tree) in enumerate(zip(units, trees, strict=True)):
        try:
            tree = policy.restrict(tree)
            if capture_from is None or capture_from <= first_line:
                parts = [(compile(tree, "<string>", "exec"), capture_from is not None)]
            else:
                pre, post = _split_module(tree, capture_from)
                parts = [
                    (compile(pre, "<string>", "exec"), False),
                    (compile(post, "<string>", "exec"), True),
                ]
        except policy.PolicyError as exc:
            result.update(_error(exc), stdout=capture.getvalue(marker))
            return result
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            result.update(_error(exc), stdout=capture.getvalue(marker))
            return result
        try:
            for code, captured in parts:
                _exec_code(code, state.namespace, capture if captured else _SINK)
        except SystemExit as exc:
            if exc.code is None or exc.code == 0:
                state.exited = True
                break
            result.update(
                error_type="SystemExit",
                error_message=str(exc.code)[:_MAX_ERROR_CHARS],
                stdout=capture.getvalue(marker),
            )
            return result
        except BaseException as exc:  # the step's own error, reported typed
            result.update(_error(exc), stdout=capture.getvalue(marker))
            return result
        if index < len(units) - 1:
            protocol.send_msg(conn, {"op": "progress", "done": index + 1})
    result["stdout"] = capture.getvalue(marker)
    return result


def _install_cpu_handler(conn: socket.socket) -> None:
    def on_cpu_limit(signum: int, frame: FrameType | None) -> None:
        try:
            protocol.send_msg(
                conn,
                {
                    "op": "result",
                    "stdout": "",
                    "error_type": "TimeoutError",
                    "error_message": "CPU time limit exceeded",
                    "timed_out": True,
                },
            )
        finally:
            os._exit(3)

    signal.signal(signal.SIGXCPU, on_cpu_limit)


def _run_job(conn: socket.socket, state: _State, job: dict[str, Any]) -> bool:
    """In a freshly forked job process: run, report, and say whether to stay as a holder."""
    _install_cpu_handler(conn)
    try:
        result = _execute(state, job, conn)
    except BaseException as exc:  # an internal failure must still produce an answer
        _LOG.debug("job failed internally", exc_info=True)
        result = {"op": "result", "stdout": "", **_error(exc)}
        result["error_type"] = "SandboxError"
    keep = (
        bool(job.get("keep"))
        and result.get("error_type") is None
        and not result.get("needs_full")
        and not result.get("timed_out")
    )
    result["kept"] = keep
    signal.signal(signal.SIGXCPU, signal.SIG_DFL)
    try:
        protocol.send_msg(conn, result)
    except OSError:
        return False
    return keep


def _holder_wait(conn: socket.socket) -> tuple[socket.socket, dict[str, Any]]:
    """Idle as the holder of a state; fork on request. Returns only in the new job process."""
    while True:
        try:
            msg = protocol.recv_msg(conn, 64 << 20)
        except (OSError, protocol.ProtocolError):
            msg = None
        if not isinstance(msg, dict) or msg.get("op") != "fork":
            os._exit(0)
        parent_end, child_end = socket.socketpair()
        soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (hard, hard))
            pid = os.fork()
        except OSError as exc:
            parent_end.close()
            child_end.close()
            protocol.send_msg(conn, {"op": "forked", "error": str(exc)})
            continue
        if pid == 0:
            conn.close()
            parent_end.close()
            with contextlib.suppress(OSError):
                os.setpgid(0, 0)
            return child_end, msg
        resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        child_end.close()
        try:
            protocol.send_msg(conn, {"op": "forked", "pid": pid}, fds=[parent_end.fileno()])
        finally:
            parent_end.close()


def _serve_state(conn: socket.socket, state: _State) -> None:
    """Main loop of every holder process; never returns. The loop (rather than recursion)
    keeps the Python stack the same height at every depth of the tree."""
    job: dict[str, Any] | None = None
    while True:
        if job is None:
            conn, job = _holder_wait(conn)
        if not _run_job(conn, state, job):
            os._exit(0)
        job = None


# =========================================================================== supervisor


@dataclass
class _Holder:
    pid: int
    sock: socket.socket


_SYNTAX_ERRORS = ("SyntaxError", "IndentationError", "TabError")


class _HolderGone(Exception):
    """The holder of a state died (killed, crashed); the state must be rebuilt."""


class _ForkFailed(Exception):
    """A holder could not fork (process or memory limits): transient, retry after eviction."""


def _anon_rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _timeout_result(timeout_s: float) -> dict[str, Any]:
    return {
        "stdout": "",
        "error_type": "TimeoutError",
        "error_message": f"the step exceeded the wall-clock limit of {timeout_s:g} s",
        "timed_out": True,
    }


def _crash_result(detail: str) -> dict[str, Any]:
    return {
        "stdout": "",
        "error_type": "SandboxError",
        "error_message": f"the sandboxed process died without answering ({detail})",
    }


def _clean_result(raw: Any, max_chars: int) -> dict[str, Any]:
    """Type-check a job process's reply; anything malformed counts as a crash."""
    if not isinstance(raw, dict) or raw.get("op") != "result":
        return _crash_result("malformed reply")
    stdout = raw.get("stdout", "")
    error_type = raw.get("error_type")
    error_message = raw.get("error_message")
    if not isinstance(stdout, str):
        return _crash_result("malformed reply")
    if error_type is not None and not isinstance(error_type, str):
        return _crash_result("malformed reply")
    if error_message is not None and not isinstance(error_message, str):
        return _crash_result("malformed reply")
    return {
        "stdout": stdout[:max_chars],
        "error_type": error_type[:200] if error_type else None,
        "error_message": error_message[:_MAX_ERROR_CHARS] if error_message else None,
        "timed_out": raw.get("timed_out") is True,
        "memory_exceeded": raw.get("memory_exceeded") is True,
        "needs_full": raw.get("needs_full") is True,
        "kept": raw.get("kept") is True,
    }


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


class _Supervisor:
    def __init__(self, ctl: socket.socket, config: dict[str, Any]) -> None:
        self.ctl = ctl
        self.limits: dict[str, Any] = config["limits"]
        self.max_states: int = int(config["max_states"])
        self.max_state_bytes: int = int(config.get("max_state_bytes", 512 << 20))
        self.incremental: bool = bool(config["incremental"])
        self.holders: OrderedDict[str, _Holder] = OrderedDict()
        self.timeout_s = float(self.limits["timeout_s"])

    # ------------------------------------------------------------------ holders

    def _forget_sockets_in_child(self) -> None:
        for holder in self.holders.values():
            holder.sock.detach()
        self.ctl.detach()

    def _spawn_root(self) -> _Holder:
        parent_end, child_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            try:
                parent_end.close()
                self._forget_sockets_in_child()
                keep = child_end.fileno()
                os.closerange(3, keep)
                os.closerange(keep + 1, 1 << 16)
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.close(devnull)
                sys.stdout = sys.stderr = _SINK
                _serve_state(child_end, _State(policy.new_namespace()))
            finally:
                os._exit(0)
        child_end.close()
        holder = _Holder(pid, parent_end)
        self.holders[protocol.ROOT_KEY] = holder
        self.holders.move_to_end(protocol.ROOT_KEY, last=False)
        return holder

    def _holder(self, key: str) -> _Holder:
        holder = self.holders.get(key)
        if holder is None:
            if key != protocol.ROOT_KEY:
                raise _HolderGone(key)
            holder = self._spawn_root()
        elif key != protocol.ROOT_KEY:
            self.holders.move_to_end(key)
        return holder

    def _drop(self, key: str) -> None:
        holder = self.holders.pop(key, None)
        if holder is not None:
            holder.sock.close()
            _kill_group(holder.pid)

    def _register(self, key: str, holder: _Holder) -> None:
        if key in self.holders:
            self._drop(key)
        self.holders[key] = holder
        while len(self.holders) > self.max_states + 1:
            oldest = next(k for k in self.holders if k != protocol.ROOT_KEY)
            evicted = self.holders.pop(oldest)
            evicted.sock.close()  # the holder exits on end of stream

    # ------------------------------------------------------------------ jobs

    def _fork_and_wait(
        self, parent_key: str, job: dict[str, Any]
    ) -> tuple[dict[str, Any], _Holder | None]:
        holder = self._holder(parent_key)
        try:
            protocol.send_msg(holder.sock, job)
            ready, _, _ = select.select([holder.sock], [], [], 30.0)
            if not ready:
                raise _HolderGone(parent_key)
            reply, fd = protocol.recv_msg_with_fd(holder.sock)
        except (OSError, protocol.ProtocolError) as exc:
            self._drop(parent_key)
            raise _HolderGone(parent_key) from exc
        if isinstance(reply, dict) and "error" in reply and fd is None:
            raise _ForkFailed(str(reply["error"]))
        if not isinstance(reply, dict) or fd is None:
            if fd is not None:
                os.close(fd)
            self._drop(parent_key)
            raise _HolderGone(parent_key)
        pid = reply.get("pid")
        child = socket.socket(fileno=fd)
        if not isinstance(pid, int) or pid <= 1:
            child.close()
            return _crash_result("malformed fork reply"), None
        deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill_group(pid)
                child.close()
                return _timeout_result(self.timeout_s), None
            ready, _, _ = select.select([child], [], [], remaining)
            if not ready:
                continue
            try:
                child.settimeout(max(remaining, 0.05) + 1.0)
                raw = protocol.recv_msg(child, _MAX_REPLY_BYTES)
            except (OSError, protocol.ProtocolError):
                raw = None
            if raw is None:
                _kill_group(pid)
                child.close()
                return _crash_result("killed by a resource limit or crashed"), None
            if isinstance(raw, dict) and raw.get("op") == "progress":
                deadline = time.monotonic() + self.timeout_s
                continue
            cap = int(self.limits["max_output_chars"]) + len(str(self.limits["output_marker"]))
            result = _clean_result(raw, cap)
            if result["kept"] and result["error_type"] is None:
                if _anon_rss_bytes(pid) <= self.max_state_bytes:
                    child.settimeout(None)
                    return result, _Holder(pid, child)
                _LOG.debug("not keeping a %d-byte state", _anon_rss_bytes(pid))
            child.close()
            if result["timed_out"]:
                _kill_group(pid)
            return result, None

    def _fork_retrying(
        self, parent_key: str, job: dict[str, Any]
    ) -> tuple[dict[str, Any], _Holder | None]:
        """Fork; if the system refuses (process count, memory), free half of the kept states
        (least recently used first, never ``parent_key``) and try once more."""
        try:
            return self._fork_and_wait(parent_key, job)
        except _ForkFailed as exc:
            victims = [k for k in self.holders if k not in (protocol.ROOT_KEY, parent_key)]
            if not victims:
                return _crash_result(f"could not fork: {exc}"), None
            for key in victims[: max(1, len(victims) // 2)]:
                self._drop(key)
            time.sleep(0.05)
        try:
            return self._fork_and_wait(parent_key, job)
        except _ForkFailed as exc:
            return _crash_result(f"could not fork: {exc}"), None

    def _job(self, blocks: list[str], start: int, capture_last: bool, keep: bool) -> dict:
        return {
            "op": "fork",
            "mode": "steps",
            "blocks": blocks,
            "start": start,
            "capture_last": capture_last,
            "keep": keep,
            "cpu_s": self.limits["cpu_s"],
            "max_open_files": self.limits["max_open_files"],
            "max_output_chars": self.limits["max_output_chars"],
            "output_marker": self.limits["output_marker"],
        }

    def _run(
        self,
        parent_key: str,
        blocks: list[str],
        start: int,
        capture_last: bool,
        keep_key: str | None,
        joined: bool = False,
    ) -> dict[str, Any]:
        job = self._job(blocks, start, capture_last, keep_key is not None)
        if joined:
            parent_key, job["mode"], job["start"] = protocol.ROOT_KEY, "joined", 0
        result, holder = self._fork_retrying(parent_key, job)
        if result.get("needs_full"):
            job = dict(job, mode="joined", start=0)
            result, holder = self._fork_retrying(protocol.ROOT_KEY, job)
            result["replayed"] = len(blocks) - 1
        if holder is not None:
            if keep_key is not None:
                self._register(keep_key, holder)
            else:
                holder.sock.close()
        return result

    def handle_run(self, msg: dict[str, Any]) -> dict[str, Any]:
        context = [str(block) for block in msg.get("context", [])]
        code = str(msg.get("code", ""))
        blocks = [*context, code]
        keys = protocol.chain_keys(blocks)
        k = len(context)
        if not self.incremental:
            result = self._run(protocol.ROOT_KEY, blocks, 0, True, None)
            result.setdefault("replayed", k)
            return result
        for _attempt in range(3):
            try:
                j = next(i for i in range(k, -1, -1) if keys[i] in self.holders or i == 0)
                replayed = k - j
                if j < k:
                    materialised = self._run(keys[j], blocks[:k], j, False, keys[k])
                    if materialised.get("error_type") in _SYNTAX_ERRORS:
                        # the context is no program on its own (a construct continues in
                        # ``code``): only the concatenation can be run
                        result = self._run(keys[0], blocks, 0, True, keys[k + 1], joined=True)
                        result["replayed"] = k
                        return result
                    if materialised.get("error_type") is not None or materialised["timed_out"]:
                        materialised["stdout"] = ""
                        materialised["replayed"] = replayed
                        return materialised
                    if keys[k] not in self.holders:
                        # not kept (e.g. the holder could not be registered): run all at once
                        result = self._run(keys[j], blocks, j, True, keys[k + 1])
                        result["replayed"] = replayed
                        return result
                result = self._run(keys[k], blocks, k, True, keys[k + 1])
                result.setdefault("replayed", replayed)
                return result
            except _HolderGone:
                _LOG.debug("a state holder disappeared; rebuilding from a shorter prefix")
                continue
        return _crash_result("state holders keep disappearing")

    # ------------------------------------------------------------------ main loop

    def serve(self) -> None:
        self._spawn_root()
        protocol.send_msg(self.ctl, {"op": "ready", "pid": os.getpid()})
        while True:
            try:
                msg = protocol.recv_msg(self.ctl)
            except (OSError, protocol.ProtocolError):
                msg = None
            if not isinstance(msg, dict) or msg.get("op") == "shutdown":
                return
            if msg.get("op") != "run":
                continue
            try:
                protocol.send_msg(self.ctl, {"op": "started", "id": msg.get("id")})
            except OSError:
                return
            try:
                result = self.handle_run(msg)
            except Exception as exc:  # report, keep serving
                _LOG.exception("supervisor failed on a request")
                result = _crash_result(f"supervisor error: {type(exc).__name__}: {exc}")
            reply = {
                "op": "result",
                "id": msg.get("id"),
                "result": {
                    key: result.get(key)
                    for key in (
                        "stdout",
                        "error_type",
                        "error_message",
                        "timed_out",
                        "memory_exceeded",
                    )
                },
                "replayed": int(result.get("replayed", 0)),
                "held": [k for k in self.holders if k != protocol.ROOT_KEY],
            }
            try:
                protocol.send_msg(self.ctl, reply)
            except OSError:
                return

    def shutdown(self) -> None:
        for key in list(self.holders):
            self._drop(key)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                time.sleep(0.005)


# =========================================================================== process setup


def _libc() -> Any:
    """The C library, if it offers the Linux calls used here (``None`` elsewhere: the
    namespaces and prctl settings are then skipped, the rlimits still apply)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("unshare", "mount", "prctl")):
        return None
    return libc


_MS_NOSUID = 2
_MS_NODEV = 4
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_CLONE_NEWNS = 0x00020000

#: Standard-library modules that allowed libraries import lazily; loaded while the worker can
#: still read everything, in case the sandbox user cannot read the Python installation.
_EAGER_STDLIB = (  # noqa: SIM905
    "math cmath fractions decimal itertools functools collections collections.abc statistics "
    "random re operator heapq bisect numbers copy datetime string struct textwrap pprint "
    "inspect dis tokenize token keyword ast typing dataclasses enum contextlib weakref warnings "
    "traceback linecache codecs unicodedata locale hashlib hmac base64 secrets difflib fnmatch "
    "json array"
).split()


def _may(path: str, uid: int, gid: int, bit: int) -> bool:
    st = os.stat(path)
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid == gid:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def _blocked_ancestor(path: str, uid: int, gid: int) -> tuple[str, str] | None:
    """The first directory on ``path`` the user cannot traverse, and the entry below it."""
    current = "/"
    for part in os.path.realpath(path).split(os.sep)[1:]:
        if not part:
            continue
        if not _may(current, uid, gid, 1):
            return current, part
        current = os.path.join(current, part)
    return None


_SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")


def _under(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


def _cover(ancestor: str, keep: list[str], libc: Any) -> None:
    """Mount an empty tmpfs over ``ancestor`` and bind the paths in ``keep`` back into it.
    The originals are reached through ``/proc/self/fd`` handles opened before covering."""
    handles = [(path, os.open(path, os.O_PATH)) for path in keep]
    try:
        if libc.mount(
            b"tmpfs", ancestor.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=0755,size=16m"
        ):
            raise OSError(ctypes.get_errno(), f"could not cover {ancestor}")
        for path, fd in handles:
            parent = os.path.dirname(path)
            os.makedirs(parent, mode=0o755, exist_ok=True)
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(path, mode=0o755, exist_ok=True)
            else:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            source = f"/proc/self/fd/{fd}".encode()
            if libc.mount(source, path.encode(), None, _MS_BIND | _MS_REC, None):
                raise OSError(ctypes.get_errno(), f"could not bind {path} back")
    finally:
        for _, fd in handles:
            os.close(fd)


def _private_filesystem(config: dict[str, Any], libc: Any) -> None:
    """Give the sandbox user a private view of the filesystem (a private mount namespace,
    when the kernel allows it; the host's mounts are untouched):

    * an ancestor of the Python installation the user cannot traverse (typically ``/root`` of
      a pyenv install) is covered by an empty tmpfs into which only the needed paths are bound
      back, so imports work and nothing else there is visible;
    * the shared writable directories (``/tmp``, ``/var/tmp``, ``/dev/shm``) are covered by
      private tmpfs mounts, so even code that escaped the Python policy cannot leave files
      outside the executor's working directory (which is bound back in place).
    """
    uid, gid = int(config["uid"]), int(config["gid"])
    wanted = [sys.base_prefix, sys.prefix, sys.exec_prefix, *sys.path, os.path.dirname(__file__)]
    needed = sorted(
        {os.path.realpath(p) for p in wanted if p and os.path.exists(p)}
        | {os.path.realpath(config["workdir"])}
    )
    needed = [p for p in needed if not any(q != p and _under(p, q) for q in needed)]
    covers: dict[str, list[str]] = {}
    for path in needed:
        found = _blocked_ancestor(path, uid, gid)
        if found is not None:
            covers.setdefault(found[0], [])
    for shared in _SHARED_WRITABLE:
        real = os.path.realpath(shared)
        if os.path.isdir(real) and _may(real, uid, gid, 2):
            covers.setdefault(real, [])
    for ancestor in covers:
        covers[ancestor] = [p for p in needed if _under(p, ancestor) and p != ancestor]
    blocked = [a for a in covers if a not in {os.path.realpath(p) for p in _SHARED_WRITABLE}]
    if libc is None or libc.unshare(_CLONE_NEWNS) != 0:
        if blocked:
            _LOG.warning(
                "the sandbox user cannot read %s and no mount namespace is available; only "
                "modules imported before dropping privileges will be importable",
                ", ".join(sorted(blocked)),
            )
        return
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "could not make the mount namespace private")
    for ancestor in sorted(covers, key=len):
        _cover(ancestor, covers[ancestor], libc)


def _setup(config: dict[str, Any]) -> None:
    limits = config["limits"]
    libc = _libc()
    is_root = os.geteuid() == 0
    wants_netns = is_root and limits.get("isolate_network") and libc is not None
    if wants_netns and libc.unshare(_CLONE_NEWNET) != 0:
        _LOG.debug("network namespace unavailable (errno %d)", ctypes.get_errno())
    for name in limits.get("preload", ()):
        try:
            importlib.import_module(name)
        except ImportError:
            _LOG.debug("preload of %s failed", name)
    for name in _EAGER_STDLIB:
        try:
            importlib.import_module(name)
        except ImportError:
            _LOG.debug("eager import of %s failed", name)
    policy.install_library_patches()
    os.chdir(config["workdir"])
    if is_root and config.get("uid") is not None:
        _private_filesystem(config, libc)
        os.setgroups([])
        os.setgid(int(config["gid"]))
        os.setuid(int(config["uid"]))
        if os.geteuid() == 0 or os.getuid() == 0:
            raise RuntimeError("could not drop root privileges")
    if libc is not None:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    fsize = int(limits["max_file_bytes"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    if limits.get("address_space_bytes") is not None:
        cap = int(limits["address_space_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    nofile = max(int(limits["max_open_files"]), 2 * int(config["max_states"]) + 64)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or nofile < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    nproc = int(limits["max_processes"])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard == resource.RLIM_INFINITY or nproc < hard:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    sys.dont_write_bytecode = True
    gc.collect()
    gc.freeze()  # pre-imported objects are never scanned again: fewer copy-on-write faults


def main(config_json: str) -> None:
    """Entry point of a worker process (see ``sandbox.py`` for how it is started)."""
    logging.basicConfig(level=logging.WARNING, format="rstar-sandbox-worker: %(message)s")
    config = json.loads(config_json)
    ctl = socket.socket(fileno=int(config["fd"]))
    try:
        _setup(config)
    except Exception as exc:
        _LOG.exception("worker setup failed")
        with contextlib.suppress(OSError):
            protocol.send_msg(ctl, {"op": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(1) from exc
    supervisor = _Supervisor(ctl, config)
    try:
        supervisor.serve()
    finally:
        supervisor.shutdown()


def enter_job_sandbox(config: dict[str, Any], job: dict[str, Any]) -> None:
    """Put the *current* process under the containment of a job process (worker setup, then
    the per-job limits) without the Python-level policy. Only for probing the process-level
    layer with unrestricted code (the tests do); never used on the execution path."""
    _setup(config)
    _prepare_job(job, 1)
