"""One check for config mappings: every key must be a field of the dataclass it builds.

A typo in a YAML file (``num_rolouts``) must stop the run with a message naming the key and the
valid ones, not be ignored; every ``from_dict`` of the library goes through :func:`check_keys`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

__all__ = ["check_keys"]


def check_keys(cls: Any, keys: Iterable[str], what: str = "", where: str = "") -> None:
    """Raise ValueError naming the keys that are not init fields of dataclass ``cls``.

    The message reads ``{where}unknown {what} key(s): 'k1', 'k2'; valid keys are: ...``.
    """
    valid = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    unknown = [k for k in keys if k not in valid]
    if unknown:
        label = f"{what} " if what else ""
        raise ValueError(
            f"{where}unknown {label}key(s): {', '.join(map(repr, unknown))}; "
            f"valid keys are: {', '.join(valid)}"
        )
