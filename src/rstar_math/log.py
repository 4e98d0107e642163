"""One switch for how much the library says: log verbosity and progress bars.

Every module logs through ``logging.getLogger(__name__)``, so everything sits under the
``rstar_math`` logger. By default the library adds no handler: an application that configured
:mod:`logging` sees our warnings and errors through its own handlers; otherwise Python's last-resort
handler prints them to stderr (so a warning about a user mistake is never lost).
:func:`set_verbosity` is the switch::

    import rstar_math
    rstar_math.set_verbosity("info")     # progress of rounds, trainers, loading ...
    rstar_math.set_verbosity("debug")    # every wave of the search
    rstar_math.set_verbosity("warning")  # the default: only what needs attention

The environment variable ``RSTAR_MATH_VERBOSITY`` (a level name) does the same at import.

Progress bars (``tqdm.auto``: widgets in Jupyter, text in a terminal) are shown by long operations
and each takes a flag to hide its own (``progress=False``); :func:`disable_progress_bars` hides them
all, as does ``RSTAR_MATH_DISABLE_PROGRESS_BARS=1`` in the environment. New long operations use
:func:`progress_bar`, which honours both.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

__all__ = [
    "disable_progress_bars",
    "enable_progress_bars",
    "get_logger",
    "get_verbosity",
    "progress_bar",
    "progress_bars_enabled",
    "reset_verbosity",
    "set_verbosity",
]

LIBRARY_LOGGER = "rstar_math"
VERBOSITY_ENV = "RSTAR_MATH_VERBOSITY"
PROGRESS_ENV = "RSTAR_MATH_DISABLE_PROGRESS_BARS"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_handler: logging.Handler | None = None
_progress_enabled: bool | None = None  # None: decided by the environment variable


def _library_logger() -> logging.Logger:
    return logging.getLogger(LIBRARY_LOGGER)


def get_logger(name: str | None = None) -> logging.Logger:
    """The library's logger, or the one of a module below it (``get_logger(__name__)``)."""
    if name is None or name == LIBRARY_LOGGER:
        return _library_logger()
    if not name.startswith(LIBRARY_LOGGER + "."):
        name = f"{LIBRARY_LOGGER}.{name}"
    return logging.getLogger(name)


def _parse_level(level: int | str) -> int:
    if isinstance(level, bool):
        raise TypeError("verbosity must be a level name or number, not a bool")
    if isinstance(level, int):
        if level < 0:
            raise ValueError(f"verbosity must be a logging level >= 0, got {level}")
        return level
    if isinstance(level, str):
        text = level.strip().lower()
        if text in _LEVELS:
            return _LEVELS[text]
        if text.isdigit():
            return int(text)
    names = ", ".join(repr(n) for n in _LEVELS if n != "warn")
    raise ValueError(
        f"unknown verbosity {level!r}: use one of {names} or a logging level number "
        "(e.g. logging.INFO)"
    )


def _root_has_handlers() -> bool:
    root = logging.getLogger()
    return any(not isinstance(h, logging.NullHandler) for h in root.handlers)


def set_verbosity(level: int | str, *, handler: bool | None = None) -> None:
    """Set the level of every ``rstar_math`` logger; messages at ``level`` and above are shown.

    ``level``: ``"debug"``, ``"info"``, ``"warning"``, ``"error"``, ``"critical"`` or a
    :mod:`logging` level number. ``handler``: add the library's own stderr handler (``True``),
    never (``False``), or only when the root logger has no handlers, i.e. when the application
    has not configured logging itself (``None``, the default; avoids printing twice).
    """
    global _handler
    value = _parse_level(level)
    logger = _library_logger()
    logger.setLevel(value)
    want = handler if handler is not None else (_handler is not None or not _root_has_handlers())
    if want and _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(_handler)
    elif not want and _handler is not None:
        logger.removeHandler(_handler)
        _handler = None


def get_verbosity() -> int:
    """The effective level of the ``rstar_math`` logger (``logging.WARNING`` by default)."""
    return _library_logger().getEffectiveLevel()


def reset_verbosity() -> None:
    """Undo :func:`set_verbosity`: remove the library's handler, inherit the root's level."""
    global _handler
    logger = _library_logger()
    if _handler is not None:
        logger.removeHandler(_handler)
        _handler = None
    logger.setLevel(logging.NOTSET)


# --------------------------------------------------------------------------- progress bars


def _env_disabled() -> bool:
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def disable_progress_bars() -> None:
    """Hide every progress bar of the library, whatever each operation's own flag says."""
    global _progress_enabled
    _progress_enabled = False


def enable_progress_bars() -> None:
    """Show progress bars again (the default); each operation's own flag still applies."""
    global _progress_enabled
    _progress_enabled = True


def progress_bars_enabled() -> bool:
    """False after :func:`disable_progress_bars` or with ``RSTAR_MATH_DISABLE_PROGRESS_BARS=1``."""
    if _progress_enabled is not None:
        return _progress_enabled
    return not _env_disabled()


def progress_bar(
    total: int | None = None, desc: str | None = None, enabled: bool = True, **kwargs: Any
) -> Any:
    """A ``tqdm.auto`` bar, shown when ``enabled`` and :func:`progress_bars_enabled`.

    A hidden bar is still a working object (``update``, ``set_postfix``, ``close`` and the context
    manager do nothing), so callers never branch on the flag.
    """
    from tqdm.auto import tqdm

    show = bool(enabled) and progress_bars_enabled()
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(total=total, desc=desc, disable=not show, **kwargs)


def _init_from_env() -> None:
    level = os.environ.get(VERBOSITY_ENV, "").strip()
    if level:
        try:
            set_verbosity(level)
        except (TypeError, ValueError) as exc:
            logging.getLogger(__name__).warning("ignoring %s=%r: %s", VERBOSITY_ENV, level, exc)


_init_from_env()
