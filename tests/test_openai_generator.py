"""OpenAIGenerator against a real local HTTP server (``ThreadingHTTPServer`` on 127.0.0.1).

No vLLM needed: the fake server answers from a per-test script of actions (canned completions,
HTTP errors, dropped or reset connections, stalls, trickled or truncated bodies), and the tests
check the request bodies, the response mapping, the retries, the clear error after the last
retry, and that nothing ever hangs (every test has a hard pytest-timeout and an elapsed-time
bound). The real-server tests are in ``tests/vllm/test_openai_server.py``.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rstar_math.format import CODE_END, STEP_END, STOP_MARKERS
from rstar_math.generators.openai import GenerationError, OpenAIGenerator
from rstar_math.interfaces import Completion, GenerationRequest, Generator

pytestmark = pytest.mark.timeout(30)

FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}


def completion_payload(
    choices: list[dict[str, Any]], prompt_tokens: int = 7, completion_tokens: int | None = None
) -> dict[str, Any]:
    for i, c in enumerate(choices):
        c.setdefault("index", i)
        c.setdefault("finish_reason", "stop")
    return {
        "id": "cmpl-test",
        "object": "text_completion",
        "model": "tiny",
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens if completion_tokens is not None else 0,
            "total_tokens": prompt_tokens + (completion_tokens or 0),
        },
    }


def ok(text: str = "x = 1\n", stop_reason: str | None = STEP_END) -> tuple[str, Any]:
    return ("json", completion_payload([{"text": text, "stop_reason": stop_reason}], 7, 3))


@dataclass
class FakeServer:
    """Script of actions, consumed one per request; the last one repeats."""

    base_url: str
    script: list[tuple[str, Any]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop_event: threading.Event = field(default_factory=threading.Event)
    responder: Any = None  # optional callable(body) -> action, overrides the script

    @property
    def requests(self) -> int:
        return len(self.paths)

    def next_action(self, body: dict[str, Any]) -> tuple[str, Any]:
        with self.lock:
            if self.responder is not None:
                return self.responder(body)
            if len(self.script) > 1:
                return self.script.pop(0)
            return self.script[0] if self.script else ok()


class Handler(BaseHTTPRequestHandler):
    server_version = "FakeOpenAI/1.0"
    fake: FakeServer  # set on the subclass per server

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self.fake.paths.append(self.path)
        if self.path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": "tiny-model"}]})
        else:
            self._send_json(404, {"error": "not found"})

    def do_POST(self) -> None:
        fake = self.fake
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        with fake.lock:
            fake.paths.append(self.path)
            fake.bodies.append(body)
            fake.headers.append(dict(self.headers))
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            self._act(fake.next_action(body))
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def _act(self, action: tuple[str, Any]) -> None:
        kind, arg = action
        if kind == "json":
            self._send_json(200, arg)
        elif kind == "slow_json":  # (seconds, payload): answer after a delay
            self.fake.stop_event.wait(arg[0])
            self._send_json(200, arg[1])
        elif kind == "status":  # (code, body, headers)
            code, payload, headers = arg
            self._send_json(code, payload, headers)
        elif kind == "raw":
            self.send_response(200)
            self.send_header("Content-Length", str(len(arg)))
            self.end_headers()
            self.wfile.write(arg)
        elif kind == "drop":  # close without any response
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif kind == "reset":  # RST instead of FIN
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        elif kind == "stall":  # say nothing for `arg` seconds (or until teardown)
            self.fake.stop_event.wait(arg)
            self.close_connection = True
        elif kind == "truncated":  # promise more bytes than sent, then close
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"choices": [')
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif kind == "trickle":  # headers, then one byte every `arg` seconds, forever
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            while not self.fake.stop_event.wait(arg):
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return
            self.close_connection = True
        else:  # pragma: no cover
            raise AssertionError(kind)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # handlers that drop/reset connections on purpose fail when finishing


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    handler = type("BoundHandler", (Handler,), {})
    httpd = QuietServer(("127.0.0.1", 0), handler)
    state = FakeServer(base_url=f"http://127.0.0.1:{httpd.server_address[1]}")
    handler.fake = state
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        state.stop_event.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def req(prompt: str = "Q: 1+1?\n", **kw: Any) -> GenerationRequest:
    kw.setdefault("stop", STOP_MARKERS)
    kw.setdefault("max_tokens", 32)
    return GenerationRequest(prompt, **kw)


@pytest.fixture
def gen(fake: FakeServer) -> Iterator[OpenAIGenerator]:
    with OpenAIGenerator(fake.base_url, "tiny", timeout_s=1.0, max_retries=3, **FAST) as g:
        yield g


# --------------------------------------------------------------------------- happy path


def test_happy_path_maps_choices_and_sends_the_request(
    fake: FakeServer, gen: OpenAIGenerator
) -> None:
    fake.script = [
        (
            "json",
            completion_payload(
                [
                    {"text": "# Step 1\nx = 2\n", "stop_reason": STEP_END},
                    {"text": "print(x)\n", "stop_reason": CODE_END},
                    {"text": "x = ", "finish_reason": "length", "stop_reason": None},
                    {"text": "done", "stop_reason": None},  # EOS
                ],
                prompt_tokens=11,
                completion_tokens=10,
            ),
        )
    ]
    request = req(n=4, temperature=0.7, top_p=0.9, seed=5, max_tokens=64)
    (result,) = gen.generate([request])
    assert isinstance(gen, Generator)
    assert [(c.text, c.stop) for c in result.completions] == [
        ("# Step 1\nx = 2\n", STEP_END),
        ("print(x)\n", CODE_END),
        ("x = ", None),
        ("done", None),
    ]
    assert result.prompt_tokens == 11
    assert sum(c.num_tokens for c in result.completions) == 10  # usage split over the choices
    (body,) = fake.bodies
    assert fake.paths == ["/v1/completions"]
    assert body == {
        "model": "tiny",
        "prompt": "Q: 1+1?\n",
        "n": 4,
        "max_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": list(STOP_MARKERS),
        "seed": 5,
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
    }


def test_batch_results_in_order_and_order_of_choices(fake: FakeServer) -> None:
    def respond(body: dict[str, Any]) -> tuple[str, Any]:
        # choices deliberately out of index order; per-choice token_ids give exact counts
        n = body["n"]
        choices = [
            {
                "index": i,
                "text": f"{body['prompt']}#{i}",
                "stop_reason": STEP_END,
                "token_ids": list(range(i + 1)),
            }
            for i in reversed(range(n))
        ]
        return ("slow_json", (0.05, completion_payload(choices, prompt_tokens=len(body["prompt"]))))

    fake.responder = respond
    with OpenAIGenerator(fake.base_url, "tiny", max_concurrency=3, timeout_s=5, **FAST) as gen:
        requests = [req(f"p{i}", n=2, seed=i) for i in range(10)]
        results = gen.generate(requests)
    assert [[c.text for c in r.completions] for r in results] == [
        [f"p{i}#0", f"p{i}#1"] for i in range(10)
    ]
    assert [[c.num_tokens for c in r.completions] for r in results] == [[1, 2]] * 10
    assert [r.prompt_tokens for r in results] == [len(f"p{i}") for i in range(10)]
    assert 2 <= fake.max_in_flight <= 3  # concurrent, within the limit


def test_sglang_matched_stop_and_text_past_a_marker_is_cut(
    fake: FakeServer, gen: OpenAIGenerator
) -> None:
    fake.script = [
        (
            "json",
            completion_payload(
                [
                    {"text": "y = 3\n", "matched_stop": STEP_END},  # SGLang's field
                    # a server that ignored `stop`: never return text after a marker
                    {"text": f"a = 1\n{STEP_END}\nb = 2\n{CODE_END}", "stop_reason": None},
                ],
                completion_tokens=9,
            ),
        )
    ]
    (result,) = gen.generate([req(n=2, temperature=1.0)])
    assert [(c.text, c.stop) for c in result.completions] == [
        ("y = 3\n", STEP_END),
        ("a = 1\n", STEP_END),
    ]


def test_greedy_n_is_one_request_copied(fake: FakeServer, gen: OpenAIGenerator) -> None:
    fake.script = [ok("z = 0\n")]
    (result,) = gen.generate([req(n=3, temperature=0.0)])
    assert fake.bodies[0]["n"] == 1 and fake.bodies[0]["temperature"] == 0.0
    assert result.completions == [Completion("z = 0\n", STEP_END, 3)] * 3


def test_model_discovery_api_key_and_base_url(fake: FakeServer) -> None:
    fake.script = [ok()]
    with OpenAIGenerator(fake.base_url + "/v1/", api_key="sk-test", **FAST) as gen:
        assert gen.completions_url == f"{fake.base_url}/v1/completions"
        gen.generate([req(), req("other")])
        assert gen.model == "tiny-model"
    assert fake.paths.count("/v1/models") == 1  # discovered once
    assert {b["model"] for b in fake.bodies} == {"tiny-model"}
    assert all(h.get("Authorization") == "Bearer sk-test" for h in fake.headers)


def test_options_extra_body_and_no_extensions(fake: FakeServer) -> None:
    fake.script = [ok()]
    with OpenAIGenerator(
        fake.base_url, "m", skip_special_tokens=None, extra_body={"top_k": 5}, **FAST
    ) as gen:
        gen.generate([req(stop=())])
    (body,) = fake.bodies
    assert "skip_special_tokens" not in body and "stop" not in body and "seed" not in body
    assert body["top_k"] == 5


def test_empty_batch_and_bad_arguments() -> None:
    gen = OpenAIGenerator("http://127.0.0.1:9", "m")
    assert gen.generate([]) == []
    with pytest.raises(ValueError):
        OpenAIGenerator("127.0.0.1:8000", "m")
    with pytest.raises(ValueError):
        OpenAIGenerator("http://x", "m", max_concurrency=0)
    with pytest.raises(ValueError):
        OpenAIGenerator("http://x", "m", timeout_s=0)


# --------------------------------------------------------------------------- transient faults


@pytest.mark.parametrize(
    "fault",
    [
        ("status", (500, {"error": "boom"}, {})),
        ("status", (503, b"unavailable", {})),
        ("status", (429, {"error": "slow down"}, {"Retry-After": "0"})),
        ("drop", None),
        ("reset", None),
        ("truncated", None),
        ("stall", 5.0),
    ],
    ids=["500", "503", "429", "drop", "reset", "truncated", "stall"],
)
def test_transient_fault_then_success(
    fake: FakeServer, gen: OpenAIGenerator, fault: tuple[str, Any]
) -> None:
    fake.script = [fault, ok("w = 9\n")]
    start = time.monotonic()
    (result,) = gen.generate([req()])
    elapsed = time.monotonic() - start
    assert result.completions == [Completion("w = 9\n", STEP_END, 3)]
    assert fake.requests == 2  # one failure, one retry
    assert elapsed < 3.0  # a stall costs one timeout (1 s), never more


def test_retry_after_is_honoured(fake: FakeServer) -> None:
    fake.script = [("status", (429, {"error": "rate"}, {"Retry-After": "0.3"})), ok()]
    with OpenAIGenerator(fake.base_url, "m", backoff_initial_s=0.01, backoff_max_s=1.0) as gen:
        start = time.monotonic()
        gen.generate([req()])
    assert 0.3 <= time.monotonic() - start < 2.0


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        (("status", (500, {"error": "internal"}, {})), 500),
        (("status", (429, {"error": "rate"}, {})), 429),
        (("drop", None), None),
        (("stall", 10.0), None),
        (("trickle", 0.1), None),
    ],
    ids=["500", "429", "drop", "stall", "trickle"],
)
def test_persistent_fault_raises_clear_error(
    fake: FakeServer, fault: tuple[str, Any], status: int | None
) -> None:
    fake.script = [fault]
    with OpenAIGenerator(fake.base_url, "m", timeout_s=0.5, max_retries=2, **FAST) as gen:
        start = time.monotonic()
        with pytest.raises(GenerationError) as info:
            gen.generate([req()])
        elapsed = time.monotonic() - start
    err = info.value
    url = f"{fake.base_url}/v1/completions"
    assert err.url == url and err.status == status and err.attempts == 3
    assert url in str(err) and "3 attempt" in str(err)
    if status is not None:
        assert f"HTTP {status}" in str(err)
    assert fake.requests == 3
    # 3 attempts x (0.5 s timeout + <= 0.05 s backoff), with slack: bounded, never a hang
    assert elapsed < 3 * 0.55 + 1.5


def test_connection_refused_is_retried_then_raises() -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with OpenAIGenerator(f"http://127.0.0.1:{port}", "m", max_retries=2, **FAST) as gen:
        start = time.monotonic()
        with pytest.raises(GenerationError) as info:
            gen.generate([req()])
    assert info.value.attempts == 3 and info.value.status is None
    assert "connection failed" in str(info.value)
    assert time.monotonic() - start < 5


# --------------------------------------------------------------------------- non-transient


@pytest.mark.parametrize("code", [400, 401, 404, 422])
def test_client_errors_are_not_retried(fake: FakeServer, gen: OpenAIGenerator, code: int) -> None:
    fake.script = [("status", (code, {"error": {"message": "bad request field"}}, {}))]
    with pytest.raises(GenerationError) as info:
        gen.generate([req()])
    assert info.value.status == code and info.value.attempts == 1
    assert "bad request field" in str(info.value)  # the server's explanation is kept
    assert fake.requests == 1


def test_malformed_responses_raise(fake: FakeServer, gen: OpenAIGenerator) -> None:
    fake.script = [("raw", b"<html>not json</html>")]
    with pytest.raises(GenerationError, match="not JSON"):
        gen.generate([req()])
    fake.script = [("json", {"object": "error"})]
    with pytest.raises(GenerationError, match="choices"):
        gen.generate([req()])
    fake.script = [ok()]  # one choice for n=2
    with pytest.raises(GenerationError, match="n=2"):
        gen.generate([req(n=2, temperature=1.0)])


def test_one_failing_request_fails_the_batch_without_hanging(fake: FakeServer) -> None:
    def respond(body: dict[str, Any]) -> tuple[str, Any]:
        if body["prompt"] == "bad":
            return ("status", (500, {"error": "always"}, {}))
        return ("slow_json", (0.05, completion_payload([{"text": "ok", "stop_reason": None}])))

    fake.responder = respond
    with OpenAIGenerator(fake.base_url, "m", max_concurrency=2, max_retries=1, **FAST) as gen:
        start = time.monotonic()
        with pytest.raises(GenerationError) as info:
            gen.generate([req("a"), req("bad"), *(req(f"c{i}") for i in range(20))])
        assert info.value.status == 500
        assert time.monotonic() - start < 5
        # the generator stays usable
        fake.responder = None
        fake.script = [ok()]
        assert gen.generate([req()])[0].completions[0].text == "x = 1\n"


def test_closed_generator_refuses_batches(fake: FakeServer) -> None:
    gen = OpenAIGenerator(fake.base_url, "m", **FAST)
    gen.close()
    for batch in ([req()], [req(), req()]):
        with pytest.raises(RuntimeError, match="closed"):
            gen.generate(batch)


# --------------------------------------------------------------------------- stop mapping


def test_resolve_stop_rules() -> None:
    from rstar_math.generators.vllm import resolve_stop, truncate_at_stop

    assert resolve_stop("a", STOP_MARKERS, "stop", STEP_END) == ("a", STEP_END)
    assert resolve_stop("a", STOP_MARKERS, "length", None) == ("a", None)
    assert resolve_stop("a", STOP_MARKERS, "stop", None) == ("a", None)  # EOS
    assert resolve_stop("a", STOP_MARKERS, "stop", 151643) == ("a", None)  # a stop token id
    assert resolve_stop(f"a{CODE_END}b{STEP_END}", STOP_MARKERS, "length", None) == ("a", CODE_END)
    assert truncate_at_stop("x<s><stop>", ("<s>", "<s><stop>")) == ("x", "<s><stop>")
    assert truncate_at_stop("plain", ()) == ("plain", None)
