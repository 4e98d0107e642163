"""A :class:`~rstar_math.interfaces.Generator` over an OpenAI-compatible completions API.

Works with vLLM (``vllm serve`` / ``python -m vllm.entrypoints.openai.api_server``), SGLang and
any server that implements ``POST /v1/completions``. Only the standard library does the HTTP
(``urllib`` in a thread pool, one request per :class:`GenerationRequest` with its ``n`` samples),
and tenacity the retries: no client SDK is needed.

Failure behaviour: every HTTP attempt has a deadline (``timeout_s``, covering connect, headers and
body); transient failures (HTTP 408/409/425/429/5xx, connection refused/reset/dropped, timeouts)
are retried ``max_retries`` times with exponential backoff and jitter (a ``Retry-After`` header is
honoured, capped at ``backoff_max_s``); anything else, or the last failed retry, raises
:class:`GenerationError` naming the URL, the HTTP status and the number of attempts. A batch never
hangs: its worst case is bounded by ``(max_retries + 1) * (timeout_s + backoff_max_s)`` per wave of
``max_concurrency`` requests.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import tenacity

from rstar_math.generators.vllm import expand_greedy, resolve_stop
from rstar_math.interfaces import Completion, GenerationRequest, GenerationResult

__all__ = ["GenerationError", "OpenAIGenerator"]

logger = logging.getLogger(__name__)

#: HTTP statuses worth another attempt: timeouts, conflicts, rate limits and server errors.
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_READ_CHUNK = 1 << 16


class GenerationError(RuntimeError):
    """A generation request failed for good (after its retries, or on a non-transient error).

    ``url`` is the endpoint, ``status`` the last HTTP status (``None`` when no response came:
    connection refused/reset, timeout), ``attempts`` how many HTTP attempts were made and
    ``body`` the start of the last error response, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        attempts: int = 1,
        body: str | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.attempts = attempts
        self.body = body


@dataclass
class _AttemptError(Exception):
    """One failed HTTP attempt (internal; becomes a GenerationError at the end)."""

    reason: str
    status: int | None = None
    body: str | None = None
    transient: bool = True
    retry_after: float | None = None

    def __str__(self) -> str:
        return self.reason


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from inference servers, fall back to backoff


class OpenAIGenerator:
    """Sample continuations from an OpenAI-compatible ``/v1/completions`` endpoint.

    Args:
        base_url: the server root, e.g. ``"http://127.0.0.1:8000"`` (a trailing ``/v1`` is
            accepted too, as OpenAI client libraries use it).
        model: the served model name; ``None`` asks ``GET /v1/models`` once and takes the first.
        api_key: sent as ``Authorization: Bearer ...`` when given (never read from the
            environment, so a key is not sent to a server by accident).
        max_concurrency: HTTP requests in flight at once (the thread pool size).
        timeout_s: deadline of one HTTP attempt: connect, headers and the whole body.
        max_retries: further attempts after the first one fails transiently.
        backoff_initial_s, backoff_max_s: exponential backoff (with jitter) between attempts.
        skip_special_tokens: sent as the vLLM/SGLang extension parameter of that name (default
            ``False``: the step markers of a fine-tuned policy are special tokens, and a skipped
            marker can never stop generation). ``None`` leaves it out, for servers that reject
            unknown parameters.
        extra_body: more JSON fields merged into every request body (``top_k``,
            ``repetition_penalty``, ``return_token_ids``, ...).
        headers: more HTTP headers.

    One HTTP request per :class:`GenerationRequest`, carrying its ``n`` (a greedy request,
    ``temperature == 0``, asks for one choice and copies it ``n`` times: vLLM rejects greedy
    ``n > 1``). Which stop string ended a choice comes from vLLM's ``stop_reason`` (or SGLang's
    ``matched_stop``); without either, a choice that finished for ``"length"`` or EOS has
    ``stop=None`` (a server that reports neither cannot tell a stop string from EOS). Token counts
    come from ``usage`` (``completion_tokens`` is split evenly over the ``n`` choices unless the
    server returns per-choice ``token_ids``, e.g. vLLM with ``extra_body={"return_token_ids":
    True}``).

    Use as a context manager or call :meth:`close` to release the thread pool.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        *,
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
        skip_special_tokens: bool | None = False,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff_initial_s < 0 or backoff_max_s < 0:
            raise ValueError("backoff_initial_s and backoff_max_s must be >= 0")
        root = base_url.rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        if not root.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = root
        self.completions_url = f"{root}/v1/completions"
        self.models_url = f"{root}/v1/models"
        self._model = model
        self.max_concurrency = max_concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.skip_special_tokens = skip_special_tokens
        self.extra_body = dict(extra_body or {})
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._headers.update(headers or {})
        self._jitter = random.Random()  # private: never touches the global RNG
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ public API

    @property
    def model(self) -> str:
        """The model name sent with every request (discovered on first use when not given)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._discover_model()
        return self._model

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Send every request concurrently (at most ``max_concurrency`` in flight).

        Results come back in request order. If any request fails for good, the requests not yet
        started are cancelled and its :class:`GenerationError` is raised.
        """
        if self._closed:
            raise RuntimeError("OpenAIGenerator is closed")
        requests = list(requests)
        if not requests:
            return []
        model = self.model
        if len(requests) == 1:
            return [self._complete(requests[0], model)]
        pool = self._get_pool()
        futures: list[Future[GenerationResult]] = [
            pool.submit(self._complete, r, model) for r in requests
        ]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        """Release the thread pool (requests in flight finish first)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> OpenAIGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenAIGenerator(base_url={self.base_url!r}, model={self._model!r})"

    def request_body(self, request: GenerationRequest, model: str | None = None) -> dict[str, Any]:
        """The JSON body :meth:`generate` posts for ``request``."""
        body: dict[str, Any] = {
            "model": model if model is not None else self.model,
            "prompt": request.prompt,
            # greedy: one sample, copied n times (vLLM rejects greedy n > 1)
            "n": 1 if request.temperature == 0 else request.n,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if self.skip_special_tokens is not None:
            body["skip_special_tokens"] = self.skip_special_tokens
            body["spaces_between_special_tokens"] = False
        body.update(self.extra_body)
        return body

    # ------------------------------------------------------------------ internals

    def _get_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("OpenAIGenerator is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.max_concurrency, thread_name_prefix="rstar-openai"
                )
            return self._pool

    def _complete(self, request: GenerationRequest, model: str) -> GenerationResult:
        payload = self._call("POST", self.completions_url, self.request_body(request, model))
        return self._parse(request, payload)

    def _discover_model(self) -> str:
        payload = self._call("GET", self.models_url, None)
        try:
            return str(payload["data"][0]["id"])
        except (KeyError, IndexError, TypeError) as exc:
            raise GenerationError(
                f"{self.models_url} lists no model; pass model= explicitly",
                url=self.models_url,
                status=200,
            ) from exc

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Exponential backoff with jitter (50-100 %); ``Retry-After`` raises the floor."""
        exp = self.backoff_initial_s * (2 ** max(0, state.attempt_number - 1))
        delay = self._jitter.uniform(0.5, 1.0) * min(self.backoff_max_s, exp)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _AttemptError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return min(delay, self.backoff_max_s)

    def _call(self, method: str, url: str, body: Mapping[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, _AttemptError) and e.transient
            ),
            before_sleep=self._log_retry,
            reraise=True,
        )
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    return self._attempt(method, url, data)
        except _AttemptError as exc:
            what = "failed" if not exc.transient else f"failed after {attempts} attempt(s)"
            status = f"HTTP {exc.status}" if exc.status is not None else "no response"
            detail = f": {exc.body[:500]}" if exc.body else ""
            raise GenerationError(
                f"{method} {url} {what} ({status}; {exc.reason}){detail}",
                url=url,
                status=exc.status,
                attempts=attempts,
                body=exc.body,
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _log_retry(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        logger.warning(
            "OpenAIGenerator: attempt %d failed (%s); retrying in %.2f s",
            state.attempt_number,
            exc,
            state.upcoming_sleep,
        )

    def _attempt(self, method: str, url: str, data: bytes | None) -> Any:
        """One HTTP attempt with a deadline over connect, headers and body."""
        deadline = time.monotonic() + self.timeout_s
        req = urllib.request.Request(url, data=data, method=method, headers=self._headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = self._read_before(resp, deadline)
                status = resp.status
        except urllib.error.HTTPError as exc:
            try:
                text = self._read_before(exc, deadline).decode("utf-8", "replace")
            except (OSError, http.client.HTTPException, _AttemptError):
                text = ""
            finally:
                exc.close()
            raise _AttemptError(
                f"server answered {exc.code} {exc.reason}",
                status=exc.code,
                body=text or None,
                transient=exc.code in TRANSIENT_STATUSES,
                retry_after=_retry_after_seconds(exc.headers.get("Retry-After")),
            ) from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise _AttemptError(f"timed out after {self.timeout_s:g} s") from exc
            if isinstance(reason, OSError):
                raise _AttemptError(f"connection failed: {reason!r}") from exc
            # Bad scheme, unknown host name as a string reason...: retrying will not help.
            raise _AttemptError(f"request failed: {reason}", transient=False) from exc
        except TimeoutError as exc:
            raise _AttemptError(f"timed out after {self.timeout_s:g} s") from exc
        except (http.client.HTTPException, OSError) as exc:
            # RemoteDisconnected, IncompleteRead, ConnectionResetError, BrokenPipeError...
            raise _AttemptError(f"connection dropped: {exc!r}") from exc
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise _AttemptError(
                f"response is not JSON: {exc}",
                status=status,
                body=raw[:500].decode("utf-8", "replace"),
                transient=False,
            ) from exc

    def _read_before(self, resp: Any, deadline: float) -> bytes:
        """Read the whole body, failing once ``deadline`` passes (a server that trickles bytes
        would otherwise reset the socket timeout forever)."""
        sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
        chunks: list[bytes] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _AttemptError(f"timed out after {self.timeout_s:g} s reading the body")
            if isinstance(sock, socket.socket):
                sock.settimeout(remaining)  # each read waits at most until the deadline
            chunk = resp.read1(_READ_CHUNK) if hasattr(resp, "read1") else resp.read(_READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
        raw = b"".join(chunks)
        # http.client reads by amount do not check Content-Length: a connection closed early
        # must not pass for a complete (and then unparsable) body.
        expected = resp.headers.get("Content-Length") if resp.headers is not None else None
        if expected is not None and expected.strip().isdigit() and len(raw) < int(expected):
            raise _AttemptError(f"connection dropped: got {len(raw)} of {int(expected)} body bytes")
        return raw

    def _parse(self, request: GenerationRequest, payload: Any) -> GenerationResult:
        url = self.completions_url
        try:
            choices = sorted(payload["choices"], key=lambda c: c.get("index", 0))
        except (KeyError, TypeError, AttributeError) as exc:
            raise GenerationError(
                f"{url}: response has no 'choices': {str(payload)[:300]}", url=url, status=200
            ) from exc
        wanted = 1 if request.temperature == 0 else request.n
        if len(choices) != wanted:
            raise GenerationError(
                f"{url}: asked for n={wanted} choices, got {len(choices)}", url=url, status=200
            )
        usage = payload.get("usage") or {}
        completion_tokens = int(usage.get("completion_tokens") or 0)
        share, extra = divmod(completion_tokens, len(choices))
        completions = []
        for i, choice in enumerate(choices):
            stop_reason = choice.get("stop_reason")
            if stop_reason is None:
                stop_reason = choice.get("matched_stop")  # SGLang
            text, stop = resolve_stop(
                choice.get("text") or "", request.stop, choice.get("finish_reason"), stop_reason
            )
            token_ids = choice.get("token_ids")
            if isinstance(token_ids, list):
                num_tokens = len(token_ids)
            else:
                num_tokens = share + (1 if i < extra else 0)
            completions.append(Completion(text, stop, num_tokens))
        return GenerationResult(
            expand_greedy(request, completions), prompt_tokens=int(usage.get("prompt_tokens") or 0)
        )
