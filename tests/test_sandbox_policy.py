"""The Python-level policy on its own (compile-time rules and value checks), in-process.

Nothing here *runs* hostile code in the test process: refusals are checked at compile time or
on harmless objects; running hostile code is the job of ``test_sandbox_hostile.py``.
"""

from __future__ import annotations

import builtins
import functools
import operator
import os

import pytest

from rstar_math.executors import policy
from rstar_math.executors.policy import PolicyError, compile_restricted_module

ALLOWED_SOURCES = [
    "x = [i * i for i in range(5) if i % 2]\ny = {k: v for k, v in zip('ab', x)}",
    "s = {i for i in range(3)}\ng = (i for i in s)",
    "print(f'{1 + 1:>4} {\"x\"!r}')",
    "class A:\n    def __init__(self, v):\n        self.v = v\n    def __add__(self, o):\n"
    "        return A(self.v + o.v)\n    def __repr__(self):\n        return 'A'",
    "class B(list):\n    def __init__(self):\n        super().__init__()",
    "f = lambda *a, **k: (a, k)\nf(*[1], **{'k': 2})",
    "d = {}\nd['a'] = 1\nd['a'] += 1\nl = [0]\nl[0] -= 3",
    "class C:\n    pass\nc = C()\nc.n = 1\nc.n += 1",
    "def outer():\n    n = 0\n    def inner():\n        nonlocal n\n        n += 1\n"
    "    return inner",
    "count = 0\ndef bump():\n    global count\n    count += 1",
    "from sympy import *\nfrom math import gcd, lcm\nimport numpy as np\nimport numpy.linalg as la",
    "if __name__ == '__main__':\n    print('main')",
    "x: int = 3\ndef f(a: int, b: float = 1.0) -> float:\n    return a * b",
    "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    print(e)\nfinally:\n    pass",
    "a, (b, c) = 1, (2, 3)\nfirst, *rest = [1, 2, 3]\n"
    "for i, (p, q) in enumerate([(1, 2)]):\n    pass",
    "while (n := 3) > 5:\n    pass\nassert True, 'msg'\ndel n",
    "print(*[1, 2], sep='-', end='\\n')\n_ = 5",
]

REFUSED_SOURCES = [
    ("x.__class__", "__class__"),
    ("getattr(x, 'y').__globals__", "__globals__"),
    ("__import__('os')", "__import__"),
    ("__builtins__", "__builtins__"),
    ("eval('1')", "Eval"),
    ("exec('1')", "Exec"),
    ("def g():\n    yield 1\ng().gi_frame", "gi_frame"),
    ("class A:\n    def __del__(self):\n        pass", "__del__"),
    ("class A(metaclass=type):\n    pass", "metaclass"),
    ("f(__x=1)", "__x"),
    ("def f(a: 'int'):\n    pass", "string annotations"),
    ("async def f():\n    pass", "AsyncFunctionDef"),
    ("match x:\n    case 1:\n        pass", "Match"),
    ("print = 1", "print"),
    ("x.__dict__['a'] = 1", "__dict__"),
    ("from . import y", "relative"),
]


@pytest.mark.parametrize("source", ALLOWED_SOURCES)
def test_ordinary_constructs_compile(source):
    compile_restricted_module(source)


@pytest.mark.parametrize(("source", "named"), REFUSED_SOURCES)
def test_refused_constructs_name_the_refusal(source, named):
    with pytest.raises(PolicyError) as refusal:
        compile_restricted_module(source)
    assert named in str(refusal.value)


def test_syntax_errors_carry_program_line_numbers():
    with pytest.raises(SyntaxError) as err:
        compile_restricted_module("x = 1\ny = (", first_line=10)
    assert err.value.lineno == 11


def test_module_allowlist():
    assert policy.module_allowed("sympy.solvers", for_import=True)
    assert policy.module_allowed("numpy.linalg", for_import=True)
    assert policy.module_allowed("scipy.optimize", for_import=True)
    for name in (
        "os",
        "sys",
        "subprocess",
        "ctypes",
        "numpy.ctypeslib",
        "numpy.testing",
        "sympy.utilities.autowrap",
        "sympy.external",
        "scipy.io",
        "numpy._core",
        "builtins",
        "importlib",
    ):
        assert not policy.module_allowed(name, for_import=True), name
    with pytest.raises(ImportError, match="'os'"):
        policy.guarded_import("os")
    with pytest.raises(ImportError):
        policy.guarded_import("math", level=1)


def test_value_checks_refuse_dangerous_objects():
    for value in (
        builtins.eval,
        builtins.exec,
        builtins.open,
        builtins.compile,
        os,
        os.system,
        operator.attrgetter,
        type,
    ):
        with pytest.raises(PolicyError):
            policy.check_value(value)
    assert policy.check_value(builtins.getattr) is policy.guarded_getattr
    assert policy.check_value(functools.wraps) is not functools.wraps
    assert policy.check_value(len) is len
    assert policy.check_value(operator.mul) is operator.mul


def test_guarded_getattr_and_safe_format():
    assert policy.guarded_getattr(3, "real") == 3
    assert policy.guarded_getattr(3, "missing", "default") == "default"
    with pytest.raises(PolicyError):
        policy.guarded_getattr(3, "__class__")
    fmt = policy.guarded_getattr("{0:>3}|{1[a]}", "format")
    assert fmt(7, {"a": 1}) == "  7|1"
    with pytest.raises(PolicyError):
        policy.guarded_getattr("{0.__class__}", "format")(1)
    with pytest.raises(PolicyError):
        policy.guarded_write(os)
    with pytest.raises(PolicyError):
        policy.safe_type("X", (), {})
    assert policy.safe_type(1) is int
    with pytest.raises(PolicyError):
        policy.guarded_apply(dict, **{"__class__": 1})


def test_namespace_looks_like_main():
    ns = policy.new_namespace()
    exec(compile_restricted_module("r = __name__\nprint_me = repr(r)"), ns)
    assert ns["r"] == "__main__"
    assert "open" in ns["__builtins__"] and ns["__builtins__"]["open"] is not builtins.open
