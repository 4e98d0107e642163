"""Incremental execution equals concatenated execution.

Random multi-step programs (seeded, reproducible) are run the way the search runs them: in
waves, step ``i`` of every program with its ``i`` predecessors as context, so the sandbox forks
from the states it kept. Every request's result (stdout of the step, error type and message)
must equal what a fresh CPython prints for the concatenated program
(:class:`SubprocessExecutor`), including requests whose context already failed.
"""

from __future__ import annotations

import random

import pytest

from rstar_math.executors import SandboxExecutor, SubprocessExecutor
from rstar_math.interfaces import ExecRequest

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

N_PROGRAMS = 36
SEED = 20250107


class ProgramGenerator:
    """Builds steps from templates that use the names defined by earlier steps."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ints: list[str] = []
        self.lists: list[str] = []
        self.funcs: list[str] = []
        self.gens: list[str] = []
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def int_name(self) -> str:
        return self.rng.choice(self.ints) if self.ints else str(self.rng.randint(-5, 9))

    def statement(self) -> str:
        r = self.rng
        options = [self.assign, self.arith, self.show, self.make_list, self.list_op, self.loop]
        if self.ints:
            options += [self.make_func, self.try_except, self.fmt, self.make_class]
        if self.funcs:
            options += [self.call]
        if self.lists:
            options += [self.make_gen, self.augment_item]
        if self.gens:
            options += [self.advance]
        options += [self.math_op, self.fraction]
        if r.random() < 0.05:
            options = [self.error]
        return r.choice(options)()

    def assign(self) -> str:
        name = self.fresh("a")
        self.ints.append(name)
        return f"{name} = {self.rng.randint(-20, 50)}"

    def arith(self) -> str:
        name = self.fresh("a")
        op = self.rng.choice(["+", "-", "*", "//", "%", "**"])
        right = str(self.rng.randint(0, 3)) if op == "**" else self.int_name()
        code = f"{name} = {self.int_name()} {op} {right}"
        self.ints.append(name)
        return code

    def show(self) -> str:
        values = ", ".join(self.rng.choice([*self.ints, "'s'"]) for _ in range(2))
        sep = self.rng.choice(["' '", "'-'", "', '"])
        return f"print({values}, sep={sep})"

    def fmt(self) -> str:
        v = self.int_name()
        return self.rng.choice(
            [
                f"print(f'{{{v}}} / 7 = {{{v} / 7:.4f}}')",
                f"print('{{:>6}}|{{!r}}'.format({v}, 'x'))",
            ]
        )

    def make_list(self) -> str:
        name = self.fresh("l")
        self.lists.append(name)
        return f"{name} = [i * {self.rng.randint(1, 4)} for i in range({self.rng.randint(1, 6)})]"

    def list_op(self) -> str:
        if not self.lists:
            return self.make_list()
        name = self.rng.choice(self.lists)
        return self.rng.choice(
            [
                f"{name}.append({self.int_name()})\nprint(len({name}), {name}[-1])",
                f"print(sorted({name}, reverse=True)[:3], sum({name}))",
                f"{name} = {name}[::-1]\nprint({name})",
            ]
        )

    def augment_item(self) -> str:
        name = self.rng.choice(self.lists)
        return f"{name}[{self.rng.randint(-2, 3)}] += {self.int_name()}\nprint({name})"

    def make_gen(self) -> str:
        name = self.fresh("g")
        self.gens.append(name)
        return f"{name} = (x * x for x in {self.rng.choice(self.lists)})"

    def advance(self) -> str:
        return f"print(next({self.rng.choice(self.gens)}, 'done'))"

    def loop(self) -> str:
        name = self.fresh("acc")
        self.ints.append(name)
        return (
            f"{name} = 0\nfor i in range({self.rng.randint(0, 6)}):\n"
            f"    if i % 2:\n        {name} += i\n    else:\n        {name} -= 1\nprint({name})"
        )

    def make_func(self) -> str:
        name = self.fresh("f")
        self.funcs.append(name)
        return (
            f"def {name}(x, *rest, scale={self.rng.randint(1, 3)}):\n"
            f"    total = x * scale + {self.int_name()}\n"
            f"    for r in rest:\n        total += r\n    return total"
        )

    def call(self) -> str:
        name = self.fresh("a")
        self.ints.append(name)
        args = ", ".join(self.int_name() for _ in range(self.rng.randint(1, 3)))
        return f"{name} = {self.rng.choice(self.funcs)}(*[{args}])\nprint({name})"

    def make_class(self) -> str:
        name = self.fresh("P")
        obj = self.fresh("p")
        return (
            f"class {name}:\n"
            f"    def __init__(self, v):\n        self.v = v\n        self.n = 0\n"
            f"    def bump(self):\n        self.n += 1\n        return self\n"
            f"    def __repr__(self):\n        return f'{name}({{self.v}}, {{self.n}})'\n"
            f"{obj} = {name}({self.int_name()}).bump().bump()\nprint({obj})"
        )

    def try_except(self) -> str:
        return (
            f"try:\n    print({self.int_name()} // ({self.int_name()} - {self.int_name()}))\n"
            f"except ZeroDivisionError as exc:\n    print('caught', exc)"
        )

    def math_op(self) -> str:
        a, b = self.int_name(), self.int_name()
        return f"import math\nprint(math.gcd({a}, 12), math.isqrt(abs({b})))"

    def fraction(self) -> str:
        return (
            "from fractions import Fraction\n"
            f"print(Fraction({self.int_name()}, {self.int_name()}) + Fraction(1, 3))"
        )

    def error(self) -> str:
        return self.rng.choice(
            [
                "print(not_defined_anywhere)",
                "int('seven')",
                "[][1]",
                "raise KeyError('k')",
                "assert 1 > 2, 'nope'",
                "x = (1,\n",
                "None.attribute",
            ]
        )

    def program(self) -> list[str]:
        steps = []
        for _ in range(self.rng.randint(2, 6)):
            steps.append("\n".join(self.statement() for _ in range(self.rng.randint(1, 3))))
        return steps


SYMPY_PROGRAMS = [
    [
        "import sympy as sp\nx = sp.Symbol('x')\nprint('start')",
        "p = sp.expand((x + 2) ** 3)\nprint(p)",
        "roots = sp.solve(p.subs(x, x - 2), x)\nprint(roots)",
        "print(sp.factor(p), sp.diff(p, x, 2))",
    ],
    [
        "import numpy as np\na = np.arange(6).reshape(2, 3)",
        "b = a.T @ a\nprint(b.tolist())",
        "print(np.linalg.matrix_rank(b), b.trace())",
    ],
]


def programs() -> list[list[str]]:
    rng = random.Random(SEED)
    return [ProgramGenerator(rng).program() for _ in range(N_PROGRAMS)] + SYMPY_PROGRAMS


def test_incremental_equals_concatenated():
    progs = programs()
    requests = [
        [ExecRequest(step, tuple(prog[:i])) for i, step in enumerate(prog)] for prog in progs
    ]
    flat = [r for per_program in requests for r in per_program]
    with SubprocessExecutor(timeout_s=60.0, num_workers=2) as plain:
        expected = plain.execute_batch(flat)

    got: dict[ExecRequest, object] = {}
    with SandboxExecutor(num_workers=2, timeout_s=30.0) as sandbox:
        depth = max(len(p) for p in progs)
        for wave in range(depth):
            batch = [per[wave] for per in requests if wave < len(per)]
            for request, result in zip(batch, sandbox.execute_batch(batch), strict=True):
                got[request] = result
        assert sandbox.stats.cache_hits > len(flat) // 2  # the waves reused kept states

    mismatches = []
    for request, want in zip(flat, expected, strict=True):
        have = got[request]
        if (have.stdout, have.error_type, have.error_message) != (
            want.stdout,
            want.error_type,
            want.error_message,
        ):
            mismatches.append((request, want, have))
    assert not mismatches, mismatches[:3]
    errors = sum(1 for r in expected if r.error_type is not None)
    assert 0 < errors < len(expected) // 2  # the generator exercises both paths
