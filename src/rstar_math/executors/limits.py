"""Resource limits of the sandbox, as one frozen dataclass.

The defaults are chosen to be safe *and* to let ordinary math code run: the address-space cap
(2 GiB) was measured against sympy + numpy (+ scipy) workers, whose virtual size after the
pre-imports is about 140-260 MiB, leaving well over a gigabyte for a step's own data; the wall
timeout per step is the one the rStar-Math reference uses for code execution (10 s).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["SandboxLimits"]

_GIB = 1024**3
_MIB = 1024**2


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Limits applied to every sandboxed step.

    Attributes:
        timeout_s: wall-clock seconds one step (one code block) may run; past it the process
            running the step is killed and the result has ``timed_out=True``. When a step's
            context must be re-executed (its cached state is gone), every re-executed block gets
            its own budget of ``timeout_s``.
        cpu_s: CPU seconds per block (``RLIMIT_CPU``); a safety net behind the wall timeout.
        address_space_bytes: ``RLIMIT_AS`` of every sandbox process (``None``: unlimited).
        max_open_files: ``RLIMIT_NOFILE`` while untrusted code runs.
        max_file_bytes: ``RLIMIT_FSIZE``: the largest file a sandbox process may write.
        max_output_chars: stdout beyond this many characters is cut and ``output_marker`` added.
        output_marker: appended to cut output.
        max_processes: ``RLIMIT_NPROC`` hard limit. The soft limit is 0 while untrusted code
            runs, so a step cannot start any process; the hard limit only bounds what code
            that escaped the Python policy could raise it to. It counts every process of the
            sandbox user on the machine (all executors' workers and kept states together).
        user: the unprivileged account the workers switch to when started as root (``None``:
            never switch; only for debugging, it leaves fork bombs uncontained).
        isolate_network: when root, put the workers in a fresh network namespace (no network).
        preload: modules imported once per worker before any step, so steps do not pay for them.
    """

    timeout_s: float = 10.0
    cpu_s: float = 15.0
    address_space_bytes: int | None = 2 * _GIB
    max_open_files: int = 64
    max_file_bytes: int = 16 * _MIB
    max_output_chars: int = 8192
    output_marker: str = "\n...[output truncated]"
    max_processes: int = 4096
    user: str | None = "nobody"
    isolate_network: bool = True
    preload: tuple[str, ...] = field(default=("numpy", "sympy"))

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if not self.cpu_s > 0:
            raise ValueError(f"cpu_s must be > 0, got {self.cpu_s}")
        if self.address_space_bytes is not None and self.address_space_bytes < 256 * _MIB:
            raise ValueError(
                "address_space_bytes below 256 MiB cannot even hold the interpreter with "
                f"numpy and sympy; got {self.address_space_bytes}"
            )
        if self.max_open_files < 16:
            raise ValueError(f"max_open_files must be >= 16, got {self.max_open_files}")
        if self.max_file_bytes < 0:
            raise ValueError(f"max_file_bytes must be >= 0, got {self.max_file_bytes}")
        if self.max_output_chars < 0:
            raise ValueError(f"max_output_chars must be >= 0, got {self.max_output_chars}")
        if self.max_processes < 16:
            raise ValueError(f"max_processes must be >= 16, got {self.max_processes}")
        if isinstance(self.preload, str):
            raise TypeError("preload must be a tuple of module names, not a str")
        object.__setattr__(self, "preload", tuple(self.preload))

    def with_timeout(self, timeout_s: float) -> SandboxLimits:
        """A copy with another wall timeout (and a CPU limit at least as large)."""
        return replace(self, timeout_s=timeout_s, cpu_s=max(self.cpu_s, timeout_s + 1.0))
