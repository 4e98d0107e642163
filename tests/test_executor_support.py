"""Shared helpers of the executor/sandbox tests (this module holds no tests).

Process accounting reads ``/proc`` directly: every sandbox process (worker, state holder, job)
carries the executor's private working directory in its command line, so the processes of one
executor can be told apart from everything else on a machine where other test runs go on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rstar"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def processes_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``marker``."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        if needle in _read(f"/proc/{entry}/cmdline"):
            stat = _read(f"/proc/{entry}/stat")
            state = stat.rsplit(b")", 1)[-1].split()[:1]
            if state and state[0] != b"Z":
                found.append(int(entry))
    return found


def children_of(pid: int) -> list[tuple[int, str]]:
    """``(pid, state)`` of every child of ``pid`` (zombies included)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        if not stat:
            continue
        fields = stat.rsplit(b")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append((int(entry), fields[0].decode()))
    return out


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def assert_executor_gone(workdir: str, before_children: set[int]) -> None:
    """After ``close()``: no sandbox process left, no new child (zombie or not) of the test
    process, the private working directory removed."""
    assert wait_until(lambda: not processes_with(workdir)), processes_with(workdir)
    new = [c for c in children_of(os.getpid()) if c[0] not in before_children]
    assert not new, f"children left behind: {new}"
    assert not os.path.exists(workdir)
