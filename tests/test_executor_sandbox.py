"""SandboxExecutor: semantics of a step in its context, incremental state, the worker pool."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import time

import pytest

from rstar_math.executors import (
    SandboxExecutor,
    SandboxLimits,
    SubprocessExecutor,
    default_executor,
)
from rstar_math.interfaces import ExecRequest, ExecResult, Executor
from tests.test_executor_support import (
    assert_executor_gone,
    children_of,
    processes_with,
    wait_until,
)

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def ex():
    before = {pid for pid, _ in children_of(os.getpid())}
    executor = SandboxExecutor(num_workers=2, timeout_s=3.0)
    yield executor
    executor.close()
    assert_executor_gone(executor.workdir, before)


def run(ex: SandboxExecutor, code: str, *context: str) -> ExecResult:
    return ex.execute_batch([ExecRequest(code, tuple(context))])[0]


# --------------------------------------------------------------------------- basics


def test_protocol_and_execute(ex):
    assert isinstance(ex, Executor)
    result = ex.execute("print(6 * 7)")
    assert result == ExecResult(stdout="42\n")
    assert result.ok


def test_batch_results_are_in_order_and_typed(ex):
    results = ex.execute_batch(
        [
            ExecRequest("print('a')"),
            ExecRequest("print(undefined_name)"),
            ExecRequest("1 / 0"),
            ExecRequest("def f(:\n    pass"),
            ExecRequest("x = ().__class__"),
            ExecRequest("import os"),
            ExecRequest("print('b')"),
        ]
    )
    assert [r.error_type for r in results] == [
        None,
        "NameError",
        "ZeroDivisionError",
        "SyntaxError",
        "PolicyError",
        "ImportError",
        None,
    ]
    assert results[0].stdout == "a\n" and results[-1].stdout == "b\n"
    assert results[1].error_message == "name 'undefined_name' is not defined"
    assert "__class__" in results[4].error_message
    assert "'os'" in results[5].error_message


def test_only_the_steps_own_stdout_is_reported(ex):
    context = ("x = 2\nprint('from step 1')", "y = x ** 10\nprint('from step 2')")
    result = run(ex, "print(x, y)", *context)
    assert result == ExecResult(stdout="2 1024\n")


def test_error_in_the_context_is_the_programs_error(ex):
    result = run(ex, "print('never')", "a = 1", "b = a / 0", "c = 3")
    assert result.error_type == "ZeroDivisionError"
    assert result.stdout == ""


def test_error_keeps_the_output_printed_before_it(ex):
    result = run(ex, "print('before')\nraise ValueError('boom')")
    assert result.stdout == "before\n"
    assert (result.error_type, result.error_message) == ("ValueError", "boom")


def test_line_numbers_are_those_of_the_concatenated_program(ex):
    blocks = ("a = 1", "b = 2\nc = 3", "y = 1\nz = (")
    result = run(ex, blocks[-1], *blocks[:-1])
    with pytest.raises(SyntaxError) as cpython:
        compile("\n".join(blocks), "<string>", "exec")
    assert result.error_type == "SyntaxError"
    assert result.error_message == f"{cpython.value.msg} (line {cpython.value.lineno})"
    assert cpython.value.lineno == 5
    traced = run(ex, "def f():\n    return g()\nf()", "a = 1")
    assert traced.error_type == "NameError"


def test_construct_split_across_steps_runs_as_one_program(ex):
    # each block alone is invalid Python; the concatenated program is valid
    context = ("flag = False\nif flag:\n    v = 1",)
    result = run(ex, "else:\n    v = 2\nprint(v)", *context)
    assert result == ExecResult(stdout="2\n")
    indented = run(ex, "    total += i\nprint(total)", "total = 0\nfor i in range(4):")
    assert indented == ExecResult(stdout="6\n")


def test_output_is_truncated_with_a_marker():
    limits = SandboxLimits(max_output_chars=100, output_marker="\n[cut]")
    with SandboxExecutor(limits, num_workers=1) as ex:
        result = ex.execute("print('x' * 1000)")
        huge = ex.execute("for i in range(200000):\n    print(i)")
    assert result.stdout == "x" * 100 + "\n[cut]"
    assert huge.ok and huge.stdout.endswith("\n[cut]") and len(huge.stdout) == 106


def test_system_exit(ex):
    done = run(ex, "print('bye')\nexit()\nprint('not reached')")
    assert done == ExecResult(stdout="bye\n")
    after = run(ex, "print('after exit')", "print('bye')\nexit()")
    assert after == ExecResult(stdout="")
    failed = run(ex, "raise SystemExit(3)")
    assert (failed.error_type, failed.error_message) == ("SystemExit", "3")


def test_ordinary_math_code_runs(ex):
    code = """
from sympy import symbols, solve, Rational
import numpy as np
import math, cmath, fractions, decimal, itertools, functools, collections, statistics, random, re
import sympy as sp
from collections import Counter, defaultdict
from functools import reduce, lru_cache
import numpy.linalg as la

x = symbols('x')
roots = solve(x**2 - 5*x + 6, x)
dp = [0] * 5
dp[0] += 1
for i in range(1, 5):
    dp[i] += dp[i - 1] * 2
counts = defaultdict(int)
for ch in "abca":
    counts[ch] += 1

class Vec:
    def __init__(self, a, b):
        self.a, self.b = a, b
    def __add__(self, other):
        return Vec(self.a + other.a, self.b + other.b)
    def __repr__(self):
        return f"Vec({self.a}, {self.b})"

class Named(Vec):
    def __init__(self, a, b, name):
        super().__init__(a, b)
        self.name = name
        self.a += 1

@lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def counter():
    c = 0
    def inc():
        nonlocal c
        c += 1
        return c
    return inc

args = [3, 4]
kwargs = {"sep": ", "}
inc = counter()
inc()
print(sorted(roots), dp, dict(counts), Vec(1, 2) + Vec(3, 4), Named(0, 0, "n").a, *args, **kwargs)
print(f"{math.pi:.3f} {fractions.Fraction(1, 3) + Rational(1, 6)} {fib(30)} {inc()}")
print("{:>5}|{}".format(7, decimal.Decimal("1.10")), statistics.mean([1, 2, 3]))
print(la.det(np.array([[2.0, 0.0], [0.0, 3.0]])), np.arange(4).sum(), cmath.sqrt(-1))
print(list(itertools.permutations([1, 2]))[1], reduce(lambda a, b: a * b, range(1, 6)))
print(re.findall(r"\\d+", "a1b22"), Counter("aab").most_common(1), sp.factorint(360))
if __name__ == "__main__":
    print(type(x).__name__, isinstance(x, sp.Symbol), [k for k in range(3) if k % 2 == 0])
"""
    result = ex.execute(code)
    assert result.ok, result
    with SubprocessExecutor(timeout_s=60) as plain:
        assert result == plain.execute(code)  # what CPython prints, unrestricted
    assert result.stdout.splitlines()[1] == "3.142 1/2 832040 2"


def test_sympy_helpers_that_evaluate_strings_still_work(ex):
    code = (
        "import sympy as sp\n"
        "x = sp.Symbol('x')\n"
        "e = sp.sympify('x**2 + 2*x + 1')\n"
        "f = sp.lambdify(x, e, 'numpy')\n"
        "print(sp.factor(e), f(2), sp.S('1/3') + sp.Rational(1, 6), sp.nsimplify(0.5))\n"
        "sp.var('p q')\n"
        "print(sp.expand((p + q) ** 2))\n"
    )
    result = ex.execute(code)
    assert result == ExecResult(stdout="(x + 1)**2 9 1/2 1/2\np**2 + 2*p*q + q**2\n")


def test_scipy_when_installed(ex):
    pytest.importorskip("scipy")
    result = ex.execute(
        "from scipy.optimize import brentq\nprint(round(brentq(lambda t: t * t - 2, 0, 2), 6))"
    )
    assert result == ExecResult(stdout="1.414214\n")


# --------------------------------------------------------------------------- incremental state


def test_state_is_reused_and_siblings_are_isolated(ex):
    base = ("items = [1]",)
    before = ex.stats
    siblings = ex.execute_batch(
        [ExecRequest(f"items.append({v})\nprint(items)", base) for v in (2, 3, 4)]
    )
    assert [r.stdout for r in siblings] == ["[1, 2]\n", "[1, 3]\n", "[1, 4]\n"]
    # the child of one sibling sees that sibling's mutation only
    child = run(ex, "print(items)", "items = [1]", "items.append(3)\nprint(items)")
    assert child.stdout == "[1, 3]\n"
    after = ex.stats
    assert after.requests - before.requests == 4


def test_per_step_cost_does_not_replay_cached_ancestors(ex):
    chain: list[str] = ["import sympy as sp\nx = sp.Symbol('x')\nacc = 0"]
    ex.execute_batch([ExecRequest(chain[0])])
    for depth in range(1, 8):
        code = f"acc += sp.degree(sp.expand((x + {depth}) ** {depth}), x)"
        before = ex.stats
        results = ex.execute_batch(
            [ExecRequest(code, tuple(chain)), ExecRequest(code + "\nprint(acc)", tuple(chain))]
        )
        assert all(r.ok for r in results), results
        after = ex.stats
        # at most one worker that did not hold the context replays it once
        assert after.replayed_blocks - before.replayed_blocks <= len(chain)
        assert after.cache_hits - before.cache_hits >= 1
        chain.append(code)
    assert results[1].stdout == f"{sum(range(1, 8))}\n"


def test_generators_and_closures_survive_across_steps(ex):
    context = (
        "def gen():\n    n = 0\n    while True:\n        n += 1\n        yield n",
        "g = gen()\nfirst = next(g)",
    )
    result = run(ex, "print(first, next(g), next(g))", *context)
    assert result.stdout == "1 2 3\n"


def test_fallback_when_states_are_evicted():
    with SandboxExecutor(num_workers=1, max_states_per_worker=1, timeout_s=5) as ex:
        chain = []
        for i in range(5):
            assert run(ex, f"v{i} = {i}", *chain).ok
            chain.append(f"v{i} = {i}")
        before = ex.stats
        result = run(ex, "print(v0 + v1 + v2)", *chain[:3])
        assert result.stdout == "3\n"
        assert ex.stats.replayed_blocks > before.replayed_blocks


def test_states_above_the_memory_budget_are_not_kept():
    with SandboxExecutor(num_workers=1, max_state_bytes=0, timeout_s=5) as ex:
        chain = ("import numpy as np\nbig = np.ones(10**6)", "total = big.sum()")
        assert run(ex, "print(total)", *chain).stdout == "1000000.0\n"
        before = ex.stats
        assert run(ex, "print(total + 1)", *chain).stdout == "1000001.0\n"
        assert ex.stats.replayed_blocks - before.replayed_blocks == 2


def test_fallback_when_state_holders_are_killed(ex):
    chain = ("s = 'abc'", "t = s * 2")
    assert run(ex, "print(t)", *chain).stdout == "abcabc\n"
    holders = [pid for pid in processes_with(ex.workdir) if pid not in ex.worker_pids]
    assert holders
    for pid in holders:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    result = run(ex, "print(t.upper())", *chain)
    assert result == ExecResult(stdout="ABCABC\n")


def test_executor_survives_a_killed_worker(ex):
    victim = ex.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    results = ex.execute_batch([ExecRequest(f"print({i})") for i in range(4)])
    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n", "3\n"]
    assert victim not in ex.worker_pids
    assert ex.stats.worker_restarts >= 1


# --------------------------------------------------------------------------- pool and limits


def test_a_stuck_job_costs_only_its_own_timeout(ex):
    start = time.monotonic()
    results = ex.execute_batch(
        [ExecRequest("while True:\n    pass")] + [ExecRequest(f"print({i})") for i in range(6)]
    )
    elapsed = time.monotonic() - start
    assert results[0].timed_out and results[0].error_type == "TimeoutError"
    assert [r.stdout for r in results[1:]] == [f"{i}\n" for i in range(6)]
    assert elapsed < ex.limits.timeout_s + 1.5
    assert ex.execute("print('still fine')").stdout == "still fine\n"


def test_memory_limit(ex):
    result = ex.execute("blocks = []\nwhile True:\n    blocks.append(bytes(50 * 2**20))")
    assert result.memory_exceeded and result.error_type == "MemoryError"
    assert ex.execute("print(len([0] * 1000))").stdout == "1000\n"


@pytest.mark.slow
def test_jobs_run_in_parallel(ex):
    # Each job stamps its own wall-clock start and end; with 2 workers, jobs of one batch must
    # overlap in time (a serial pool would give disjoint intervals). No timing thresholds, so a
    # loaded machine cannot make this flaky.
    busy = (
        "from datetime import datetime\n"
        "start = datetime.now().timestamp()\n"
        "t = 0\nfor i in range(2_000_000):\n    t += i\n"
        "print(start, datetime.now().timestamp())"
    )
    results = ex.execute_batch([ExecRequest(busy + f"\nprint({i})") for i in range(4)])
    assert all(r.ok for r in results), results
    spans = [tuple(map(float, r.stdout.split()[:2])) for r in results]
    overlapping = sum(
        1
        for a in range(4)
        for b in range(a + 1, 4)
        if spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
    )
    assert overlapping >= 1, spans


def test_timeout_shortcut_and_default_executor():
    with SandboxExecutor(timeout_s=1.0, num_workers=1) as ex:
        assert ex.limits.timeout_s == 1.0
        assert ex.execute("pass").ok  # the worker is up
        start = time.monotonic()
        assert ex.execute("while True:\n    pass").timed_out
        assert time.monotonic() - start < 2.0
    executor = default_executor()
    try:
        assert isinstance(executor, SandboxExecutor)
        assert executor.limits == SandboxLimits()
    finally:
        executor.close()


def test_limits_validation():
    with pytest.raises(ValueError):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError):
        SandboxLimits(address_space_bytes=1024)
    with pytest.raises(TypeError):
        SandboxLimits(preload="numpy")
    with pytest.raises(ValueError):
        SandboxExecutor(num_workers=0)


# --------------------------------------------------------------------------- lifecycle


def test_close_ends_every_process_and_leaves_no_zombies():
    before = {pid for pid, _ in children_of(os.getpid())}
    ex = SandboxExecutor(num_workers=2, timeout_s=1.0)
    ex.execute_batch(
        [
            ExecRequest("a = 1"),
            ExecRequest("print(a)", ("a = 1",)),
            ExecRequest("while True:\n    pass"),
            ExecRequest("x = [0] * 10**10"),
        ]
    )
    assert processes_with(ex.workdir)
    ex.close()
    ex.close()  # idempotent
    assert_executor_gone(ex.workdir, before)
    with pytest.raises(RuntimeError):
        ex.execute("print(1)")


def test_context_manager_and_garbage_collection_clean_up():
    before = {pid for pid, _ in children_of(os.getpid())}
    with SandboxExecutor(num_workers=1) as ex:
        assert ex.execute("print(1)").ok
    assert_executor_gone(ex.workdir, before)

    dropped = SandboxExecutor(num_workers=1)
    assert dropped.execute("print(2)").stdout == "2\n"
    workdir = dropped.workdir
    del dropped
    gc.collect()
    assert wait_until(lambda: not processes_with(workdir))
    assert not os.path.exists(workdir)


def test_subprocess_executor_agrees_on_basics():
    requests = [
        ExecRequest("print(x + 1)", ("x = 1\nprint('ctx')",)),
        ExecRequest("print(undefined)"),
        ExecRequest("print('x' * 30)"),
        ExecRequest("while True:\n    pass"),
    ]
    with SubprocessExecutor(timeout_s=2.0, num_workers=2, max_output_chars=10) as sub:
        results = sub.execute_batch(requests)
    assert results[0] == ExecResult(stdout="2\n")
    assert results[1].error_type == "NameError"
    assert results[2].stdout == "x" * 10 + "\n...[output truncated]"
    assert results[3].timed_out
