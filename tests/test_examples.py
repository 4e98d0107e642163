"""The examples never rot: the quickstart script and both notebooks run end to end.

The notebooks are executed cell by cell with nbclient in a fresh kernel of this interpreter
(the ``python3`` kernel of ipykernel resolves to ``sys.executable``), from the ``examples``
folder as a user opening them in Jupyter would. A failing cell fails the test with the cell's
traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

#: Seconds one notebook cell may take (the slowest cells take a few seconds; a kernel start and
#: the first import of torch on a busy machine take longer).
CELL_TIMEOUT_S = 240


def run_notebook(name: str) -> Any:
    """Execute ``examples/<name>`` in a fresh kernel; return the executed notebook."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    client.execute()
    return notebook


def outputs_text(notebook: Any) -> str:
    """Everything the notebook's cells printed or displayed as text."""
    parts: list[str] = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                parts.append(output["text"])
            data = output.get("data", {})
            if "text/plain" in data:
                parts.append(data["text/plain"])
    return "\n".join(parts)


def test_top_level_exports_are_documented() -> None:
    """docs/api/rstar_math.md lists every name of ``rstar_math.__all__`` (the table is by hand)."""
    import rstar_math

    page = (REPO / "docs" / "api" / "rstar_math.md").read_text(encoding="utf-8")
    missing = [
        name for name in rstar_math.__all__ if name != "__version__" and f"[`{name}`]" not in page
    ]
    assert not missing, f"add these exports to the table in docs/api/rstar_math.md: {missing}"


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny models run faster on one thread (and do not spin-wait on a busy 2-core machine)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.slow
@pytest.mark.sandbox
def test_quickstart_script() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "correct: True" in proc.stdout, proc.stdout
    assert "\\boxed{4}" in proc.stdout


@pytest.mark.slow
@pytest.mark.sandbox
def test_solve_and_inspect_notebook(one_thread: None) -> None:
    notebook = run_notebook("solve_and_inspect.ipynb")
    text = outputs_text(notebook)
    assert "built-in policy:" in text and "models/miniature/policy" in text
    assert "correct: True" in text  # the shipped model solves the notebook's problem
    assert "nodes restored" in text
    assert "=== answer:" in text  # Trajectory.pretty()
    # the last cell displays the tree itself, as its interactive HTML view
    last = notebook.cells[-1]
    assert last.cell_type == "code" and last.outputs
    assert "text/html" in last.outputs[0]["data"]


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.hf
def test_train_ppm_notebook(one_thread: None) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    notebook = run_notebook("train_ppm.ipynb")
    text = outputs_text(notebook)
    assert "all solved: True" in text
    assert "held-out pair accuracy by step" in text
    assert "ppm_config.json" in text
    assert "answer: 64" in text  # the trained PPM guided the search to the right answer
