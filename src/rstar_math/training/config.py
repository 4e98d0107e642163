"""Loading training configs from dicts, YAML or JSON files, with unknown keys rejected.

Every trainer config is a flat dataclass. :func:`load_config` builds one from a mapping (what a
YAML/JSON config file holds, or CLI overrides), refusing any key the dataclass does not have with
an error naming the key, and converting the obvious string spellings YAML produces (``1e-5`` is a
string in YAML 1.1) to the field's type.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from rstar_math._config import check_keys

__all__ = [
    "PPMTrainingConfig",
    "SFTTrainingConfig",
    "config_to_dict",
    "load_config",
    "read_config_file",
]

T = TypeVar("T")


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON config file into a dict."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        from rstar_math._deps import require

        yaml = require("yaml", "train")
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
    return data


def load_config(
    cls: type[T],
    source: Mapping[str, Any] | str | os.PathLike[str] | T | None = None,
    **overrides: Any,
) -> T:
    """Build the config dataclass ``cls`` from a mapping, a YAML/JSON file path, or an instance.

    ``overrides`` (e.g. CLI flags; ``None`` values are ignored) win over ``source``. A key that is
    not a field of ``cls`` raises ``ValueError`` naming it and listing the valid keys.
    """
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, cls):
        data = config_to_dict(source)
    elif isinstance(source, Mapping):
        data = dict(source)
    elif isinstance(source, (str, os.PathLike)):
        data = read_config_file(source)
    else:
        raise TypeError(f"cannot build {cls.__name__} from a {type(source).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    check_keys(cls, data, cls.__name__)
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(k, v, hints.get(k, Any), cls.__name__) for k, v in data.items()}
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-safe dict of a config dataclass (paths as strings)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _coerce(name: str, value: Any, hint: Any, owner: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg, owner)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(f"{owner}.{name}: cannot use {value!r} ({'; '.join(errors)})")
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ValueError(f"{owner}.{name} must be one of {allowed}, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"{owner}.{name} must be a bool, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ValueError(f"{owner}.{name} must be an int, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError(f"{owner}.{name} must be an int, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(f"{owner}.{name} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{owner}.{name} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, os.PathLike)):
            return str(value)
        raise ValueError(f"{owner}.{name} must be a string, got {value!r}")
    if origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            return type(value)(value) if origin is list else tuple(value)
        raise ValueError(f"{owner}.{name} must be a list, got {value!r}")
    return value


# --------------------------------------------------------------------------- trainer configs

SchedulerKind = Literal["constant", "linear", "cosine"]


@dataclass
class PPMTrainingConfig:
    """Hyper-parameters of :func:`~rstar_math.training.train_ppm`.

    ``batch_size`` counts node-level :class:`~rstar_math.training.PreferencePair` records per
    micro-batch (each holds up to ``len(pos) * len(neg)`` combinations); an optimizer step sees
    ``batch_size * grad_accum_steps`` records. ``max_steps > 0`` overrides ``num_epochs``.
    ``eval_fraction`` of the records is held out when no ``eval_pairs`` are passed; held-out pair
    accuracy is measured before training, every ``eval_every`` steps and at the end. ``scale`` is
    the value squash ``tanh(r / scale)`` of a PPM built from a policy (a PPM checkpoint keeps its
    own); ``head_init_std`` its value head's initialisation (0: zeros, every value starts at 0).
    ``evidence`` (e.g. ``["min_logprob"]``) builds a token-evidence PPM from a policy, its
    evidence weights starting at ``evidence_init`` (see :mod:`rstar_math.scorers.ppm`); empty
    (the default) is the paper's PPM.
    ``resume``: continue from the latest ``checkpoint-*`` in ``output_dir`` if present.
    """

    output_dir: str = "ppm_output"
    learning_rate: float = 7e-6
    num_epochs: float = 1.0
    max_steps: int = 0
    batch_size: int = 8
    grad_accum_steps: int = 1
    lr_scheduler: SchedulerKind = "cosine"
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 2048
    scale: float = 5.0
    head_init_std: float = 0.0
    evidence: tuple[str, ...] = ()
    evidence_init: float = 1.0
    eval_fraction: float = 0.0
    eval_every: int = 0
    eval_batch_size: int = 32
    save_every: int = 0
    save_total_limit: int = 2
    seed: int = 42
    device: str = "auto"
    bf16: bool = False
    gradient_checkpointing: bool = False
    resume: bool = True
    progress: bool = True
    log_every: int = 10

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> PPMTrainingConfig:
        return load_config(cls, data, **overrides)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> PPMTrainingConfig:
        return load_config(cls, path, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


@dataclass
class SFTTrainingConfig:
    """Hyper-parameters of :func:`train_sft` (defaults sized for real runs; tests override).

    ``max_steps > 0`` overrides ``num_epochs``. ``batch_size`` counts sequences (packed blocks with
    ``packing``) per micro-batch; one optimizer step sees ``batch_size * grad_accum_steps``.
    ``eval_fraction`` of the records is held out when no ``eval_records`` are passed. ``resume``:
    continue from the latest ``checkpoint-*`` in ``output_dir`` when there is one.
    ``group_by_length`` batches examples of similar length together (less padding, so faster on
    data of mixed lengths; ignored with ``packing``, which has no padding to save).
    ``train_on_prompt`` puts loss on the prompt's tokens too (the evaluation loss stays on the
    responses): a model trained from scratch has to learn the questions' language somewhere.
    """

    output_dir: str = "sft_output"
    learning_rate: float = 7e-6
    num_epochs: float = 2.0
    max_steps: int = 0
    batch_size: int = 8
    grad_accum_steps: int = 1
    lr_scheduler: SchedulerKind = "cosine"
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 2048
    packing: bool = False
    group_by_length: bool = False
    train_on_prompt: bool = False
    add_special_markers: bool = True
    eval_fraction: float = 0.0
    eval_every: int = 0
    eval_batch_size: int = 8
    save_every: int = 0
    save_total_limit: int = 2
    seed: int = 42
    device: str = "auto"
    bf16: bool = False
    gradient_checkpointing: bool = False
    resume: bool = True
    progress: bool = True
    log_every: int = 10

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> SFTTrainingConfig:
        return load_config(cls, data, **overrides)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> SFTTrainingConfig:
        return load_config(cls, path, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)
