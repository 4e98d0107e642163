"""The built-in model hook: ``MCTSSolver.default()`` / ``default_solver()`` / ``rstar-math solve``.

The shipped miniature weights are built by a separate pipeline; these tests check the loading path
with a model directory laid out the same way (``RSTAR_MINIATURE_DIR``), and the message when no
built-in model is installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rstar_math import MCTSSolver
from rstar_math.models import builtin


def test_missing_builtin_model_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(builtin.ENV_DIR, str(tmp_path / "nothing"))
    assert builtin.builtin_paths() is None
    with pytest.raises(FileNotFoundError, match=r"build_miniature\.py.*MCTSSolver\(HFGenerator"):
        MCTSSolver.default()


@pytest.mark.hf
@pytest.mark.sandbox
def test_default_solver_loads_a_miniature_layout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_trained_policy_dir: Path
) -> None:
    from rstar_math.scorers import PPMModel
    from tests.conftest import TINY_PROBLEMS

    root = tmp_path / "miniature"
    shutil.copytree(tiny_trained_policy_dir, root / "policy")
    PPMModel.from_policy(str(tiny_trained_policy_dir)).save_pretrained(root / "ppm")
    monkeypatch.setenv(builtin.ENV_DIR, str(root))
    assert builtin.builtin_paths() == (str(root / "policy"), str(root / "ppm"))
    question, _, answer = TINY_PROBLEMS[0]
    with MCTSSolver.default(num_rollouts=2, num_candidates=2) as solver:
        assert solver.scorer is not None and solver.config.num_rollouts == 2
        result = solver.solve(question, reference=answer)
    assert result.correct is True
    assert all(n.ppm_value is not None for n in result.tree.nodes[1:])
