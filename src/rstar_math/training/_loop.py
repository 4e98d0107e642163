"""Pieces shared by the PPM and SFT training loops (torch needed: import only from trainers).

* a deterministic batch plan: which examples form each micro-batch and which micro-batches form
  each optimizer step, a pure function of (seed, epoch), so a resumed run continues with exactly
  the batches the interrupted one would have seen;
* optimizer / learning-rate schedule construction;
* checkpoint directories (``checkpoint-000100``) written atomically (to a temporary name, then
  renamed), trainer state (optimizer, scheduler, step, RNG) saved beside the model files, pruning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rstar_math._deps import require

torch = require("torch", "train")

__all__ = [
    "TRAINER_STATE_FILE",
    "TRAINER_STATE_JSON",
    "BatchPlan",
    "build_optimizer",
    "build_scheduler",
    "checkpoint_dirs",
    "get_rng_state",
    "latest_checkpoint",
    "load_trainer_state",
    "prune_checkpoints",
    "resolve_device",
    "save_checkpoint",
    "set_rng_state",
    "split_eval",
]

logger = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.pt"
TRAINER_STATE_JSON = "trainer_state.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def resolve_device(name: str) -> Any:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


# --------------------------------------------------------------------------- data plan


def split_eval(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministically split ``range(n)`` into (train, eval) index lists."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {fraction}")
    idx = list(range(n))
    n_eval = round(n * fraction)
    if fraction > 0 and n_eval == 0 and n > 1:
        n_eval = 1
    if n_eval == 0:
        return idx, []
    rng = random.Random(f"eval-split:{seed}")
    rng.shuffle(idx)
    return sorted(idx[n_eval:]), sorted(idx[:n_eval])


#: With ``lengths``, items are sorted by length within windows of this many micro-batches.
LENGTH_GROUP_WINDOW = 50


@dataclass(frozen=True)
class BatchPlan:
    """Micro-batches and optimizer steps over ``n`` training items.

    ``lengths`` (one per item) groups items of similar length into the same micro-batch, so less
    of each padded batch is padding: every epoch's shuffled order is cut into windows of
    :data:`LENGTH_GROUP_WINDOW` micro-batches, each window is sorted by length and cut into
    micro-batches, and the micro-batches are shuffled again (so consecutive steps do not go from
    short to long). The plan stays a pure function of the seed and the epoch, so a resumed run
    sees the same batches.
    """

    n: int
    batch_size: int
    grad_accum: int
    seed: int
    shuffle: bool = True
    lengths: Sequence[int] | None = None
    _epochs: dict[int, list[list[list[int]]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("no training examples")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum_steps must be >= 1")
        if self.lengths is not None and len(self.lengths) != self.n:
            raise ValueError(f"lengths has {len(self.lengths)} entries for {self.n} items")

    @property
    def micro_batches_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.micro_batches_per_epoch / self.grad_accum)

    def total_steps(self, epochs: float, max_steps: int) -> int:
        if max_steps and max_steps > 0:
            return int(max_steps)
        return max(1, math.ceil(epochs * self.steps_per_epoch))

    def epoch_groups(self, epoch: int) -> list[list[list[int]]]:
        """The optimizer steps of ``epoch``: each a list of micro-batches of item indices."""
        if epoch not in self._epochs:
            self._epochs.clear()  # one epoch at a time is all a training loop asks for
            self._epochs[epoch] = self._plan_epoch(epoch)
        return self._epochs[epoch]

    def _plan_epoch(self, epoch: int) -> list[list[list[int]]]:
        order = list(range(self.n))
        rng = random.Random(f"epoch:{self.seed}:{epoch}")
        if self.shuffle:
            rng.shuffle(order)
        if self.lengths is not None:
            lengths = self.lengths
            window = self.batch_size * LENGTH_GROUP_WINDOW
            order = [
                i
                for start in range(0, self.n, window)
                for i in sorted(order[start : start + window], key=lambda i: -lengths[i])
            ]
        micro = [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        if self.lengths is not None and self.shuffle:
            rng.shuffle(micro)
        return [micro[i : i + self.grad_accum] for i in range(0, len(micro), self.grad_accum)]

    def step_group(self, step: int) -> list[list[int]]:
        """The micro-batches of optimizer step ``step`` (0-based, counting across epochs)."""
        epoch, within = divmod(step, self.steps_per_epoch)
        return self.epoch_groups(epoch)[within]


# --------------------------------------------------------------------------- optimization


def build_optimizer(
    model: Any, lr: float, weight_decay: float, betas: Sequence[float] = (0.9, 0.999)
) -> Any:
    """AdamW; biases and norm weights (1-d parameters) get no weight decay."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=tuple(betas))


def build_scheduler(optimizer: Any, kind: str, warmup_steps: int, total_steps: int) -> Any:
    """Linear warm-up, then constant / linear decay to 0 / cosine decay to 0."""
    if kind not in ("constant", "linear", "cosine"):
        raise ValueError(f"lr_scheduler must be 'constant', 'linear' or 'cosine', got {kind!r}")
    warmup_steps = max(0, int(warmup_steps))
    total_steps = max(1, int(total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if kind == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(1.0, max(0.0, progress))
        if kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_from(config: Any, total_steps: int) -> int:
    if getattr(config, "warmup_steps", 0):
        return int(config.warmup_steps)
    return round(getattr(config, "warmup_ratio", 0.0) * total_steps)


# --------------------------------------------------------------------------- RNG


def get_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:  # pragma: no cover - numpy is a core dependency
        pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    if "python" in state:
        random.setstate(state["python"])
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


# --------------------------------------------------------------------------- checkpoints


def checkpoint_dirs(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoint directories under ``output_dir``, oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir() and (p / TRAINER_STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(
    output_dir: str | os.PathLike[str],
    step: int,
    save_model: Callable[[Path], None],
    state: dict[str, Any],
    summary: dict[str, Any],
    keep: int = 0,
) -> Path:
    """Write ``checkpoint-{step}``: model files via ``save_model``, then the trainer state.

    The directory is assembled under a temporary name and renamed when complete, so a crash
    mid-save never leaves a checkpoint a resume would pick up.
    """
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"checkpoint-{step:06d}"
    tmp = root / f".tmp-checkpoint-{step:06d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(tmp)
    torch.save(state, tmp / TRAINER_STATE_FILE)
    (tmp / TRAINER_STATE_JSON).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep and keep > 0:
        prune_checkpoints(root, keep)
    return final


def prune_checkpoints(output_dir: str | os.PathLike[str], keep: int) -> None:
    dirs = checkpoint_dirs(output_dir)
    for old in dirs[: max(0, len(dirs) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def load_trainer_state(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(checkpoint) / TRAINER_STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a trainer checkpoint (no {path.name})")
    return torch.load(path, map_location="cpu", weights_only=False)


def save_final(
    output_dir: str | os.PathLike[str], save_model: Callable[[Path], None], summary: dict[str, Any]
) -> Path:
    """Write the final model to ``output_dir/final`` (atomically replaced)."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / "final"
    tmp = root / ".tmp-final"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(tmp)
    (tmp / TRAINER_STATE_JSON).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final
