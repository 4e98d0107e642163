"""One test per foreseeable user mistake: each ends in one clear message that says what to do.

Every test uses the real classes (tiny models are built on the fly where a model is needed) and
asserts the message, not just the exception type: a message that names the problem but not the
fix is a failure here. Also the one verbosity switch (``rstar_math.log``) and progress bars.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from rstar_math import MCTSSolver, SearchConfig
from rstar_math.generators.scripted import ScriptedGenerator
from rstar_math.interfaces import GenerationRequest, ScoreRequest
from tests.helpers import FunctionScorer, InProcessExecutor

STEP = "<code>\n# Step 1: take one\nx = 1\n<end_of_step>"
PRINT = "\n# Now print the final answer\nprint(x)\n<end_of_code>"


def script(request: GenerationRequest) -> list[str]:
    if request.prompt.endswith("<end_of_output>\n"):
        return ["<answer>The answer is \\boxed{1}.<end_of_answer>"]
    if request.prompt.endswith("<end_of_step>"):
        return [PRINT]
    return [STEP]


def solver(**kwargs: Any) -> MCTSSolver:
    config = kwargs.pop("config", SearchConfig(num_rollouts=2, num_candidates=2))
    return MCTSSolver(
        ScriptedGenerator(script), executor=InProcessExecutor(), config=config, **kwargs
    )


def _hf() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")


# --------------------------------------------------------------------------- unknown model paths


@pytest.mark.hf
def test_unknown_model_path() -> None:
    _hf()
    from rstar_math.generators import HFGenerator

    with pytest.raises(FileNotFoundError) as info:
        HFGenerator("/no/such/dir")
    message = str(info.value)
    assert "no model at '/no/such/dir': that directory does not exist" in message
    assert "save_pretrained" in message and "Hugging Face Hub id" in message
    assert "Repo id must be" not in message  # not transformers' puzzling text


@pytest.mark.hf
def test_model_path_without_a_checkpoint(tmp_path: Path) -> None:
    _hf()
    from rstar_math.generators import HFGenerator

    with pytest.raises(FileNotFoundError, match=r"has no config\.json, so it is not a saved"):
        HFGenerator(tmp_path)  # an existing but empty directory
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=r"is a file, not a directory: pass a directory"):
        HFGenerator(tmp_path / "weights.bin")


@pytest.mark.hf
def test_incomplete_checkpoint_directory(tiny_trained_policy_dir: Path, tmp_path: Path) -> None:
    _hf()
    from rstar_math.generators import HFGenerator

    shutil.copy(tiny_trained_policy_dir / "config.json", tmp_path / "config.json")  # no weights
    with pytest.raises(OSError, match=r"is incomplete \(save_pretrained writes config\.json"):
        HFGenerator(tmp_path)


@pytest.mark.hf
def test_unknown_tokenizer_path(tiny_trained_policy_dir: Path) -> None:
    _hf()
    from rstar_math.generators import HFGenerator

    with pytest.raises(FileNotFoundError, match=r"no tokenizer at '\./no/such/tokenizer'"):
        HFGenerator(tiny_trained_policy_dir, tokenizer="./no/such/tokenizer")


@pytest.mark.hf
def test_unknown_ppm_path_and_a_policy_given_as_ppm(tiny_trained_policy_dir: Path) -> None:
    _hf()
    from rstar_math.scorers import PPMModel, PPMScorer

    with pytest.raises(FileNotFoundError, match=r"no PPM checkpoint at '/no/such/ppm'.*save_pretr"):
        PPMScorer.from_pretrained("/no/such/ppm")
    with pytest.raises(FileNotFoundError, match=r"not a PPM checkpoint.*PPMModel\.from_policy"):
        PPMScorer.from_pretrained(tiny_trained_policy_dir)
    with pytest.raises(FileNotFoundError, match=r"no policy at '/no/such/policy'"):
        PPMModel.from_policy("/no/such/policy")


@pytest.mark.hf
def test_unknown_policy_path_for_ppm_training(tmp_path: Path) -> None:
    _hf()
    from rstar_math.training import train_ppm

    with pytest.raises(FileNotFoundError, match=r"no policy at '/no/such/policy'.*save_pretrained"):
        train_ppm("/no/such/policy", [], {"output_dir": str(tmp_path), "progress": False})


@pytest.mark.hf
def test_unknown_policy_path_for_sft(tmp_path: Path) -> None:
    _hf()
    from rstar_math.training import train_sft

    with pytest.raises(Exception) as info:
        train_sft("/no/such/policy", [], {"output_dir": str(tmp_path), "progress": False})
    assert isinstance(info.value, FileNotFoundError), info.value
    assert "no policy at '/no/such/policy'" in str(info.value)


# --------------------------------------------------------------------------- step markers


def _tokenizer_without_markers() -> Any:
    from rstar_math.models.tiny import build_tiny_tokenizer
    from tests.conftest import tiny_corpus

    return build_tiny_tokenizer(tiny_corpus(), vocab_size=400, special_tokens=[])


@pytest.mark.hf
def test_generator_warns_when_the_tokenizer_lacks_the_step_markers(
    caplog: pytest.LogCaptureFixture, tiny_tokenizer: Any
) -> None:
    _hf()
    from rstar_math.generators import HFGenerator
    from rstar_math.models.tiny import build_tiny_model

    tokenizer = _tokenizer_without_markers()
    model = build_tiny_model(tokenizer, hidden_size=16, num_layers=1)
    with caplog.at_level(logging.WARNING, logger="rstar_math"):
        HFGenerator.from_model(model, tokenizer)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0]
    assert "no single token for the step marker(s) <end_of_step>, <end_of_code>" in message
    assert "still stops at them" in message
    assert "few-shot" in message and "train_sft" in message and "tokenizer saved with it" in message

    # a tokenizer that has them: nothing to say
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rstar_math"):
        HFGenerator.from_model(build_tiny_model(tiny_tokenizer, hidden_size=16), tiny_tokenizer)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.hf
def test_sft_adds_the_missing_step_markers(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    _hf()
    from rstar_math.format import SPECIAL_MARKERS
    from rstar_math.models.tiny import build_tiny_model
    from rstar_math.training import SFTRecord, train_sft
    from tests.conftest import TINY_PROBLEMS

    tokenizer = _tokenizer_without_markers()
    model = build_tiny_model(tokenizer, hidden_size=16, num_layers=1)
    records = [SFTRecord(q, s) for q, s, _ in TINY_PROBLEMS]
    config = {"output_dir": str(tmp_path), "max_steps": 1, "batch_size": 2, "progress": False}
    with caplog.at_level(logging.INFO, logger="rstar_math"):
        result = train_sft(model, records, config, tokenizer=tokenizer)
    assert f"added {len(SPECIAL_MARKERS)} step markers to the tokenizer" in caplog.text
    for marker in SPECIAL_MARKERS:
        assert len(result.tokenizer.encode(marker, add_special_tokens=False)) == 1
    assert result.model.get_input_embeddings().weight.shape[0] >= len(result.tokenizer)


@pytest.mark.hf
def test_sft_without_adding_markers_warns(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    _hf()
    from rstar_math.models.tiny import build_tiny_model
    from rstar_math.training import SFTRecord, train_sft
    from tests.conftest import TINY_PROBLEMS

    tokenizer = _tokenizer_without_markers()
    model = build_tiny_model(tokenizer, hidden_size=16, num_layers=1)
    config = {
        "output_dir": str(tmp_path),
        "max_steps": 1,
        "batch_size": 2,
        "progress": False,
        "add_special_markers": False,
    }
    with caplog.at_level(logging.WARNING, logger="rstar_math"):
        train_sft(
            model, [SFTRecord(q, s) for q, s, _ in TINY_PROBLEMS], config, tokenizer=tokenizer
        )
    assert "add_special_markers=False" in caplog.text and "<end_of_step>" in caplog.text


# --------------------------------------------------------------------------- scorer values


@pytest.mark.parametrize("value", [3.0, -1.5, float("nan")])
def test_scorer_value_out_of_range(value: float) -> None:
    bad = solver(scorer=FunctionScorer(lambda _text: value))
    with pytest.raises(ValueError) as info:
        bad.solve("Pick one.")
    message = str(info.value)
    assert f"the scorer returned {value}, outside [-1, 1]" in message
    assert "must squash its values (PPMScorer does)" in message


def test_scorer_returning_the_wrong_number_of_values() -> None:
    class Short:
        def score(self, requests: list[ScoreRequest]) -> list[float]:
            return [0.0] * (len(requests) - 1)

    with pytest.raises(RuntimeError, match=r"the scorer returned 0 values for 1 requests"):
        solver(scorer=Short()).solve("Pick one.")


# --------------------------------------------------------------------------- config keys


def _config_loaders() -> list[Any]:
    """(loader, data, the bad key, a valid key the message must list)."""
    from rstar_math.evolution.rounds import EvolutionConfig
    from rstar_math.evolution.spec import SolverSpec

    evo = {"problems": "p", "base_policy": "b"}
    cases = [
        ("SearchConfig", SearchConfig.from_dict, {"num_rollout": 3}, "num_rollout", "num_rollouts"),
        (
            "preset",
            lambda d: SearchConfig.paper_eval(**d),
            {"num_rollout": 3},
            "num_rollout",
            "num_rollouts",
        ),
        ("SolverSpec", SolverSpec.from_dict, {"policy": "p", "polcy": "q"}, "polcy", "policy"),
        (
            "SolverSpec.search",
            SolverSpec.from_dict,
            {"policy": "p", "search": {"c_put": 1.0}},
            "c_put",
            "c_puct",
        ),
        ("EvolutionConfig", EvolutionConfig.from_dict, {**evo, "round": []}, "round", "rounds"),
        (
            "EvolutionConfig.rounds[].search",
            EvolutionConfig.from_dict,
            {**evo, "rounds": [{"search": {"num_rollout": 2}}]},
            "num_rollout",
            "num_rollouts",
        ),
    ]
    try:
        from rstar_math.training.config import PPMTrainingConfig, SFTTrainingConfig
    except ImportError:
        pass
    else:
        cases += [
            (
                "PPMTrainingConfig",
                PPMTrainingConfig.from_dict,
                {"learning_rat": 1e-5},
                "learning_rat",
                "learning_rate",
            ),
            (
                "SFTTrainingConfig",
                SFTTrainingConfig.from_dict,
                {"epochs": 2},
                "epochs",
                "num_epochs",
            ),
        ]
    return [pytest.param(*case[1:], id=case[0]) for case in cases]


@pytest.mark.parametrize(("loader", "data", "bad", "valid"), _config_loaders())
def test_unknown_config_key_is_named_with_the_valid_ones(
    loader: Any, data: Any, bad: str, valid: str
) -> None:
    with pytest.raises(ValueError) as info:
        loader(data)
    message = str(info.value)
    named, listed = message.split(";", 1)
    assert re.fullmatch(rf"unknown \w+ key\(s\): '?{bad}'?", named), message
    assert "valid keys" in listed and re.search(rf"\b{valid}\b", listed), message


def test_unknown_key_in_a_yaml_training_config(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    pytest.importorskip("torch")
    from rstar_math.training.config import PPMTrainingConfig

    path = tmp_path / "ppm.yaml"
    path.write_text("learning_rate: 1.0e-5\nbatch_sise: 4\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown PPMTrainingConfig key\(s\): 'batch_sise'"):
        PPMTrainingConfig.from_file(path)


def test_unknown_round_key_lists_the_valid_ones() -> None:
    from rstar_math.evolution.rounds import EvolutionConfig

    with pytest.raises(ValueError) as info:
        EvolutionConfig.from_dict({"problems": "p", "base_policy": "b", "rounds": [{"polcy": "x"}]})
    message = str(info.value)
    assert "rounds[0]: unknown key(s): 'polcy'" in message and "valid keys" in message
    assert "policy" in message.split("valid keys", 1)[1]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"algorithm": "mcst"}, r"SearchConfig\.algorithm must be one of \('mcts', 'beam'"),
        ({"num_rollouts": 0}, r"SearchConfig\.num_rollouts must be a positive int, got 0"),
        ({"top_p": 0}, r"SearchConfig\.top_p must be in \(0, 1\], got 0"),
        ({"answer_selection": "vote"}, r"answer_selection must be one of .*'majority'"),
    ],
)
def test_config_value_out_of_range(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        SearchConfig(**changes)


# --------------------------------------------------------------------------- solver inputs


@pytest.mark.parametrize("question", ["", "   \n"])
def test_empty_question(question: str) -> None:
    with pytest.raises(ValueError, match=r"questions\[0\] must be a non-empty string"):
        solver().solve(question)


def test_empty_question_in_a_batch_names_its_index() -> None:
    with pytest.raises(ValueError, match=r"questions\[2\] must be a non-empty string, got ''"):
        solver().solve_batch(["What is 1?", "What is 2?", ""])


def test_references_length_mismatch() -> None:
    with pytest.raises(ValueError) as info:
        solver().solve_batch(["What is 1?", "What is 2?"], references=["1"])
    assert str(info.value) == (
        "got 1 references for 2 questions; pass one reference (or None) per question"
    )


def test_beam_search_without_a_scorer() -> None:
    with pytest.raises(ValueError, match=r"beam search ranks steps by a scorer: pass scorer="):
        solver(config=SearchConfig(algorithm="beam"))


def test_not_a_generator() -> None:
    with pytest.raises(TypeError, match=r"generator must implement generate\(requests\)"):
        MCTSSolver(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"scorer must implement score\(requests\)"):
        MCTSSolver(ScriptedGenerator(script), scorer=lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"num_trees must be >= 1, got 0"):
        MCTSSolver(ScriptedGenerator(script), num_trees=0)


def test_a_model_path_given_as_the_generator() -> None:
    with pytest.raises(TypeError) as info:
        MCTSSolver("Qwen/Qwen2.5-Math-7B")  # type: ignore[arg-type]
    assert "not a model path" in str(info.value) and "HFGenerator(" in str(info.value)


def test_one_string_given_to_solve_batch() -> None:
    # today "2+2?" is solved as the four problems "2", "+", "2", "?"
    with pytest.raises(TypeError, match=r"a list of questions.*solve\(question\)"):
        solver().solve_batch("2+2?")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- missing extras


def test_missing_vllm_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    from rstar_math.generators.vllm import VLLMGenerator

    with pytest.raises(ImportError) as info:
        VLLMGenerator("some/model")
    assert str(info.value) == (
        "'vllm' is needed for this feature but is not installed: pip install 'rstar-math[vllm]'"
    )


def test_missing_hf_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    from rstar_math.generators.hf import HFGenerator

    with pytest.raises(ImportError, match=r"pip install 'rstar-math\[hf\]'"):
        HFGenerator("some/model")


def test_missing_ray_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    from rstar_math.evolution.distributed import RayTreeGenerator
    from rstar_math.evolution.spec import SolverSpec

    with pytest.raises(ImportError, match=r"pip install 'rstar-math\[ray\]'"):
        RayTreeGenerator(SolverSpec(policy="p"))


# --------------------------------------------------------------------------- verbosity switch


@pytest.fixture
def clean_logging() -> Any:
    from rstar_math import log

    yield log
    log.reset_verbosity()
    log._progress_enabled = None


def test_unknown_verbosity_level(clean_logging: Any) -> None:
    with pytest.raises(ValueError) as info:
        clean_logging.set_verbosity("loud")
    message = str(info.value)
    assert message.startswith("unknown verbosity 'loud': use one of 'debug', 'info', 'warning'")
    assert "logging.INFO" in message


def test_set_verbosity_is_the_one_switch(
    clean_logging: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    log = clean_logging
    module_logger = logging.getLogger("rstar_math.search.engine")
    assert log.get_verbosity() == logging.getLogger().getEffectiveLevel()

    log.set_verbosity("debug", handler=True)
    assert log.get_verbosity() == logging.DEBUG
    module_logger.debug("a debug message from deep inside")
    assert "DEBUG rstar_math.search.engine: a debug message from deep inside" in (
        capsys.readouterr().err
    )
    log.set_verbosity("ERROR", handler=True)  # names are case-insensitive; one handler only
    module_logger.warning("hidden")
    module_logger.error("shown once")
    err = capsys.readouterr().err
    assert "hidden" not in err and err.count("shown once") == 1
    assert len(logging.getLogger("rstar_math").handlers) == 1

    log.reset_verbosity()
    assert logging.getLogger("rstar_math").handlers == []
    assert logging.getLogger("rstar_math").level == logging.NOTSET


def test_set_verbosity_uses_the_applications_handlers(
    clean_logging: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # pytest's capture handler sits on the root logger, like an application's logging config
    clean_logging.set_verbosity(logging.INFO)
    assert logging.getLogger("rstar_math").handlers == []  # no second handler: no double print
    logging.getLogger("rstar_math.training").info("seen by the application")
    assert "seen by the application" in caplog.text


def test_progress_bars_switch(
    clean_logging: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = clean_logging
    monkeypatch.delenv(log.PROGRESS_ENV, raising=False)
    assert log.progress_bars_enabled()
    with log.progress_bar(total=3, desc="shown", file=sys.stderr) as bar:
        bar.update(3)
    assert "shown" in capsys.readouterr().err
    with log.progress_bar(total=3, desc="flag-off", enabled=False, file=sys.stderr) as bar:
        bar.update(3)
    log.disable_progress_bars()
    with log.progress_bar(total=3, desc="globally-off", file=sys.stderr) as bar:
        bar.update(3)
    err = capsys.readouterr().err
    assert "flag-off" not in err and "globally-off" not in err
    log.enable_progress_bars()
    assert log.progress_bars_enabled()
    log._progress_enabled = None
    monkeypatch.setenv(log.PROGRESS_ENV, "1")
    assert not log.progress_bars_enabled()


def test_verbosity_from_the_environment(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import logging, rstar_math.log as l; "
        "logging.getLogger('rstar_math.x').info('env switch works'); "
        "print(l.get_verbosity())"
    )
    env = {"RSTAR_MATH_VERBOSITY": "info", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(logging.INFO) and "env switch works" in done.stderr
    env["RSTAR_MATH_VERBOSITY"] = "chatty"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "ignoring RSTAR_MATH_VERBOSITY='chatty'" in done.stderr
    assert json.loads(done.stdout) == logging.WARNING
