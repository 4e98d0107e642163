"""Fixtures for the vLLM tests, run in the separate ``.venv-vllm`` (``.ci/setup_vllm_env.sh``).

    .venv-vllm/bin/python -m pytest tests/vllm -m vllm

Everything heavy is created once per session: a tiny Qwen2 policy *trained* for a few hundred
steps on real code-augmented CoT solutions (so greedy decoding writes marker-containing text, not
noise), one offline ``vllm.LLM`` engine over it, and one vLLM OpenAI-compatible server process on
loopback. The server is started in the background as soon as the model exists, so its ~75 s
start-up overlaps with the offline engine's load and the offline tests.

Nothing here imports vllm, torch or transformers at import time: in the main venv (no vllm) the
test modules skip themselves with ``pytest.importorskip("vllm")`` and this file stays inert.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from rstar_math.format import PromptTemplate

#: Real rStar-Math SFT records (``{query, response}``), when the shared data folder exists.
DATA_DIR = Path(
    os.environ.get(
        "RSTAR_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data" / "rstar"
    )
)

#: Used when the shared data is absent, so the suite never depends on it.
FALLBACK_RECORDS: tuple[dict[str, str], ...] = (
    {
        "query": "What is 2 * 20 * 12?",
        "response": "<code>\n# Step 1: Multiply the numbers\nx = 2 * 20 * 12\n<end_of_step>\n\n"
        "# Now print the final answer\nprint(x)\n<end_of_code>\n<output>480<end_of_output>\n"
        "<answer>The answer is \\boxed{480}.<end_of_answer>",
    },
    {
        "query": "Find x such that 2x + 3 = 11.",
        "response": "<code>\n# Step 1: Move 3 to the right side\nrhs = 11 - 3\n<end_of_step>\n\n"
        "# Step 2: Divide by 2\nx = rhs / 2\n<end_of_step>\n\n"
        "# Now print the final answer\nprint(x)\n<end_of_code>\n<output>4.0<end_of_output>\n"
        "<answer>x is \\boxed{4}.<end_of_answer>",
    },
)

#: Engine settings shared by the offline engine and the server. float32 on both sides so HF and
#: vLLM greedy decoding agree (vLLM would otherwise downcast a float32 checkpoint).
#: ``enforce_eager`` skips the engine's torch.compile warm-up (~50 s on a cold cache, on this
#: CPU); set RSTAR_VLLM_COMPILE=1 to test the compiled path instead.
ENGINE_KWARGS: dict[str, Any] = {
    "dtype": "float32",
    "gpu_memory_utilization": 0.3,
    "max_model_len": 1024,
    "seed": 0,
    "enforce_eager": os.environ.get("RSTAR_VLLM_COMPILE", "0") != "1",
}
SERVER_START_TIMEOUT_S = float(os.environ.get("RSTAR_VLLM_SERVER_TIMEOUT_S", "420"))

#: Wall-clock seconds of the session fixtures, shown in the terminal summary.
TIMINGS: dict[str, float] = {}


def load_sft_records() -> list[dict[str, str]]:
    path = DATA_DIR / "sft_data_examples.json"
    if path.is_file():
        records = json.loads(path.read_text(encoding="utf-8"))
        return [{"query": r["query"], "response": r["response"]} for r in records]
    return [dict(r) for r in FALLBACK_RECORDS]


def training_texts(records: Sequence[dict[str, str]]) -> list[tuple[str, str]]:
    """(prompt, response) pairs in the SFT template the library's solver prompts with."""
    template = PromptTemplate.sft()
    return [(template.render(r["query"]), r["response"]) for r in records]


def build_trained_tiny_model(
    path: str | Path,
    steps: int = 200,
    *,
    seed: int = 0,
    lr: float = 3e-3,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    vocab_size: int = 600,
    max_len: int = 256,
    records: Sequence[dict[str, str]] | None = None,
) -> Path:
    """Train a tiny Qwen2 policy on code-augmented CoT solutions and save it to ``path``.

    Plain torch AdamW over the first ``max_len`` tokens of each text (prompt included, so the
    model also learns the template), full batch; about 30 s of CPU time with the defaults. A
    couple of hundred steps make it reproduce the training solutions closely, so greedy
    decoding from an SFT prompt writes ``<code> ... <end_of_step> ...`` with confident logits:
    HF and vLLM then agree token for token despite float rounding differences. head_dim is
    ``hidden_size / num_heads`` = 64, a size vLLM's CPU attention supports.
    """
    import torch
    import transformers

    from rstar_math.models.tiny import build_tiny_model, build_tiny_tokenizer, save_tiny_model

    # One intra-op thread: tiny models are faster that way, and two OpenMP threads spin-waiting
    # on a busy 2-core machine make training many times slower.
    torch.set_num_threads(1)
    records = list(records) if records is not None else load_sft_records()
    pairs = training_texts(records)
    texts = [p + r for p, r in pairs]
    tokenizer = build_tiny_tokenizer(texts, vocab_size=vocab_size)
    model = build_tiny_model(
        tokenizer,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        max_position_embeddings=2048,
        seed=seed,
    )
    # Train with the tokenizer exactly as HF and vLLM will load it from the directory: with a
    # qwen2 config.json beside it, AutoTokenizer builds a Qwen2Tokenizer whose pre-tokenizer
    # (digits split one by one) differs from the in-memory one build_tiny_tokenizer returns.
    save_tiny_model(model, tokenizer, path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    eos = tokenizer.eos_token_id
    seqs = []
    for text in texts:
        ids_ = tokenizer(text, add_special_tokens=False)["input_ids"]
        # EOS only where the text really ends (a cut text must not teach EOS mid-solution).
        seqs.append([*ids_, eos] if len(ids_) < max_len else ids_[:max_len])
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)

    torch.manual_seed(seed)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda i: min(1.0, (i + 1) / 20) * max(0.1, 1 - i / steps)
    )
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
    model.eval()
    model.config.final_train_loss = float(loss.detach())
    return save_tiny_model(model, tokenizer, path)


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """vLLM's OpenAI-compatible server in a child process (own process group) on loopback."""

    def __init__(self, model_dir: Path, log_path: Path, extra_args: Sequence[str] = ()) -> None:
        self.model_dir = model_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--gpu-memory-utilization",
            str(ENGINE_KWARGS["gpu_memory_utilization"]),
            "--dtype",
            ENGINE_KWARGS["dtype"],
            "--max-model-len",
            str(ENGINE_KWARGS["max_model_len"]),
            "--seed",
            str(ENGINE_KWARGS["seed"]),
            "--enable-prefix-caching",
            *(["--enforce-eager"] if ENGINE_KWARGS["enforce_eager"] else []),
            *extra_args,
        ]
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._ready = False
        self.started = time.monotonic()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
        """Poll ``/v1/models`` until it answers 200; fail with the server log otherwise."""
        if self._ready:
            return
        deadline = time.monotonic() + timeout_s
        waited = time.monotonic()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"vLLM server exited with {self.proc.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=5) as resp:
                    if resp.status == 200:
                        self._ready = True
                        TIMINGS["server start (from launch)"] = time.monotonic() - self.started
                        TIMINGS["server: extra wait after engine"] = time.monotonic() - waited
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(1.0)
        pytest.fail(f"vLLM server not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the server's process group (only the processes this fixture started)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


# --------------------------------------------------------------------------- fixtures


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in TIMINGS.items())
        terminalreporter.write_line(f"vllm suite fixtures: {parts}")


def _server_tests_selected(config: pytest.Config) -> bool:
    return bool(getattr(config, "_rstar_vllm_server_wanted", False))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Start the server early only when a selected test will use it.
    config._rstar_vllm_server_wanted = any(  # type: ignore[attr-defined]
        "vllm_server" in getattr(item, "fixturenames", ()) for item in items
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny Qwen2 checkpoint directory (trained once per session, ~1 min on CPU).

    ``RSTAR_TINY_MODEL_DIR`` points at an existing directory to reuse instead (handy while
    iterating on the tests).
    """
    reuse = os.environ.get("RSTAR_TINY_MODEL_DIR")
    if reuse and (Path(reuse) / "config.json").is_file():
        return Path(reuse)
    start = time.monotonic()
    path = build_trained_tiny_model(tmp_path_factory.mktemp("tiny_policy"))
    TIMINGS["train tiny model"] = time.monotonic() - start
    return path


@pytest.fixture(scope="session")
def _server_handle(
    request: pytest.FixtureRequest,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[VLLMServer | None]:
    """Start the server process (not waiting for it) when server tests are selected."""
    if not _server_tests_selected(request.config):
        yield None
        return
    server = VLLMServer(tiny_model_dir, tmp_path_factory.mktemp("vllm_server") / "server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_generator(tiny_model_dir: Path, _server_handle: VLLMServer | None) -> Iterator[Any]:
    """One ``VLLMGenerator`` (one offline engine) for the whole session; it loads in ~50 s.

    Depends on ``_server_handle`` so the server process starts loading first, in parallel.
    """
    pytest.importorskip("vllm")
    from rstar_math.generators.vllm import VLLMGenerator

    start = time.monotonic()
    generator = VLLMGenerator(tiny_model_dir, **ENGINE_KWARGS)
    TIMINGS["offline engine load"] = time.monotonic() - start
    yield generator
    generator.close()


@pytest.fixture(scope="session")
def vllm_server(_server_handle: VLLMServer | None, vllm_generator: Any) -> VLLMServer:
    """The ready OpenAI-compatible vLLM server serving ``tiny_model_dir``.

    Requests ``vllm_generator`` so that, whichever test comes first, the server process and the
    offline engine load side by side (the server is launched before the engine).
    """
    assert _server_handle is not None, "vllm_server requested but not selected at collection"
    _server_handle.wait_ready()
    return _server_handle


@pytest.fixture(scope="session")
def hf_reference(tiny_model_dir: Path) -> Any:
    """The same checkpoint in transformers (float32, CPU, eval) and its tokenizer."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32")
    model.eval()
    return model, tok


@pytest.fixture(scope="session")
def sft_prompts() -> list[str]:
    """SFT prompts of the training questions (the model continues them with real steps)."""
    return [p for p, _ in training_texts(load_sft_records())]
