"""Executors: run the Python of each step (the :class:`~rstar_math.interfaces.Executor` protocol).

* :class:`SandboxExecutor` (the default): RestrictedPython policy + resource-limited worker
  processes running as an unprivileged user, with interpreter state cached per trajectory
  prefix so a step's cost does not grow with its depth.
* :class:`SubprocessExecutor`: plain ``python -c`` per request, no sandbox; the baseline.
"""

from rstar_math.executors.limits import SandboxLimits
from rstar_math.executors.policy import ALLOWED_MODULE_ROOTS, PolicyError
from rstar_math.executors.sandbox import ExecutorStats, SandboxExecutor
from rstar_math.executors.subprocess import SubprocessExecutor

__all__ = [
    "ALLOWED_MODULE_ROOTS",
    "ExecutorStats",
    "PolicyError",
    "SandboxExecutor",
    "SandboxLimits",
    "SubprocessExecutor",
    "default_executor",
]


def default_executor() -> SandboxExecutor:
    """The executor ``MCTSSolver`` uses when none is given: a sandbox with default limits."""
    return SandboxExecutor()
