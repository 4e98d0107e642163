r"""Answer extraction, normalisation and equivalence checking.

Grading decides the reward of every terminal node in terminal-guided MCTS and the vote groups at
test time, so it has to be right, fast on the common cases, and never hang or crash a search
running in worker threads. The design follows from those three needs:

* **Fast path, in process.** Most answers are plain numbers, fractions, tuples or short constant
  expressions (``\frac{3}{56}``, ``3\sqrt{13}``, ``(3, \frac{\pi}{2})``). They are normalised
  (:func:`normalize_answer`) and compared by a small exact-rational / floating evaluator and a
  structural comparison of tuples, intervals, sets, unions and matrices. This costs microseconds and
  needs neither sympy nor a subprocess, so grading thousands of answers stays cheap.
* **Slow path, in a worker process.** What the fast path cannot decide (symbolic expressions such
  as ``p - q`` vs ``-q + p``) goes to `math-verify <https://github.com/huggingface/Math-Verify>`_
  with a sympy fallback. Both can run for ever on pathological input (a power tower such as
  ``2^{2^{2^{2^{2^{2}}}}}``), and math-verify's own timeouts use ``signal.alarm``, which raises in
  any thread but the main one. So math-verify is called with ``parsing_timeout=None`` /
  ``timeout_seconds=None`` inside a small pool of worker *processes* owned by a :class:`Grader`;
  a call that runs past its timeout kills its worker (a fresh one replaces it lazily), logs a
  warning and grades the pair as not equivalent. Workers are plain ``subprocess`` children that
  load this file by path, so no ``multiprocessing`` start-method pitfalls (re-importing
  ``__main__``, forking a threaded parent) and no import of the heavy ``rstar_math`` package.
  A call returns within its timeout plus a little slack; the one exception is the one-off start
  of a worker process (about a second, bounded by ``startup_timeout_s``), which is not charged
  to the call's budget; :meth:`Grader.warmup` pays it up front. Slow-path results are cached.
* **Module-level convenience.** :func:`is_equivalent` uses a default :class:`Grader` created
  lazily, under a lock, on first use (:func:`get_default_grader`). Creating it does not start a
  process; the first slow-path comparison does. It is replaced automatically in a forked child.

Conventions (the MATH dataset's, where it has one):

* ``50\%`` equals ``50``; a value written with a percent sign also equals its fraction
  (``50\%`` equals ``0.5``), but ``50`` does not equal ``0.5``.
* Units and decorations are dropped: ``\text{ cm}``, ``\mbox{ inches}^2``, ``\$``, ``dollars``,
  ``^\circ``, ``degrees``; so are ``\left``/``\right``, ``\!``, ``\,``, ``\boxed{}`` wrappers,
  math delimiters, a trailing period and a leading ``x =`` (a single variable).
* ``1,000`` (``d{1,3}(,ddd)+`` with nothing around it) is the number 1000; a bracketed
  ``(1,000)`` is a tuple. A bare comma list ``1, -2`` is an unordered list of solutions;
  ``a \pm b`` is the list ``a + b, a - b``.
* Tuples and intervals compare element-wise and only with the same brackets: ``(1,2)`` equals
  ``\left(1,2\right)`` but not ``[1,2]`` or the set ``\{1,2\}``, and ``[0,1)`` does not equal
  ``(0,1)``. Sets, bare lists and unions compare as unordered collections.
* ``1\frac{4}{5}`` is the mixed number 9/5. Multiple-choice ``(C)`` / ``\text{(C)}`` equals ``C``.
  Plain words compare case-insensitively (``\text{East}`` equals ``east``).
* Numbers: two exact rationals (integers, ``\frac{7}{2}``, ``7/2``: no decimal point, no
  ``\pi`` or root) compare exactly, so ``1000001`` is not ``1000000``. As soon as one side is a
  decimal (possibly rounded, ``0.3333333``) or irrational, values are equal when
  ``|a - b| <= rel_tol * max(|a|, |b|)`` (``rel_tol = 1e-6`` by default), and, when either value
  is irrational, also when ``|a - b| <= abs_tol`` (float rounding near zero).
* An empty answer (``""``, ``\boxed{}``) never equals anything.
"""

from __future__ import annotations

# This module must stay importable on its own, with the standard library only at import time:
# grading worker processes load this very file by path (see ``_WORKER_BOOTSTRAP``), without the
# ``rstar_math`` package. math-verify and sympy are imported inside the worker functions.
import cmath
import contextlib
import json
import logging
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

__all__ = [
    "Grader",
    "extract_answer",
    "get_default_grader",
    "is_equivalent",
    "last_boxed",
    "normalize_answer",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_REL_TOL = 1e-6
DEFAULT_ABS_TOL = 1e-12

#: Inputs longer than this skip the in-process fast path: its work is linear-ish, but a
#: megabyte-long "answer" is a generation gone wrong and belongs behind the timeout.
_FAST_PATH_MAX_CHARS = 5000
#: Longer "answers" are only trimmed, not normalised (keeps normalisation cheap on junk).
_MAX_NORMALIZE_CHARS = 20_000
#: Exact rational powers whose result would exceed this many bits are done in floating point
#: (where they overflow and become undecidable) instead of building gigantic integers.
_MAX_EXACT_BITS = 200_000
_MAX_LIST_ITEMS = 64

_Value = Fraction | float | complex
_Verdict = bool | None  # True / False when decided, None when the fast path cannot tell


# --------------------------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------------------------


def _as_text(value: object, name: str) -> str:
    """Return ``value`` as answer text, or raise a TypeError that names the argument.

    Numbers are accepted because references often come from datasets as ints or floats (GSM8K);
    anything else (None, bytes, lists) is a caller bug that should fail loudly, not grade False.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a str or a number, not bool")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "\\infty" if value > 0 else ("-\\infty" if value < 0 else "nan")
        text = format(Decimal(repr(value)), "f")
        return text if "." in text else text + ".0"  # a float is an approximation: keep it one
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"{name} must be a str or a number, not {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Boxed-answer extraction
# --------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")


def _brace_pairs(s: str) -> dict[int, int]:
    """Map the index of every matched ``{`` to its ``}`` in one pass (escapes skipped)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _read_box_argument(text: str, i: int, pairs: dict[int, int]) -> tuple[str | None, int]:
    """Read the argument of ``\\boxed`` starting at ``i``: ``{...}`` or one bare token."""
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i < n and text[i] == "{":
        end = pairs.get(i, -1)
        if end == -1:
            return None, i
        return text[i + 1 : end], end + 1
    m = re.compile(r"[^\s$]+").match(text, i)
    if m is None:
        return None, i
    return m.group(0), m.end()


def last_boxed(text: str) -> str | None:
    r"""Return the content of the last ``\boxed{...}`` or ``\fbox{...}`` in ``text``, or None.

    Braces are matched with nesting (``\boxed{\frac{1}{2}}`` gives ``\frac{1}{2}``) and escaped
    braces do not count (``\boxed{\{1,2\}}`` gives ``\{1,2\}``). ``\boxed 5`` (no braces) gives
    ``5``. A box nested inside another box is part of the outer one. An unterminated box
    (a generation cut off mid-answer) is skipped, so the last *complete* box wins. The content is
    returned verbatim (not stripped) so callers that rebuild text can do so exactly.

    This is the one balanced-brace extractor of the package; ``rstar_math.format`` reuses it.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    result: str | None = None
    pos = 0
    pairs: dict[int, int] | None = None
    while True:
        m = _BOX_RE.search(text, pos)
        if m is None:
            return result
        if pairs is None:
            pairs = _brace_pairs(text)  # one pass, so many unterminated boxes stay linear
        content, end = _read_box_argument(text, m.end(), pairs)
        if content is None:
            pos = m.end()
            continue
        result = content
        pos = end


def extract_answer(text: str) -> str | None:
    r"""Return the final answer of a solution: the stripped content of its last ``\boxed{}``.

    Returns None when the text has no (complete) boxed answer, so callers can tell "no answer"
    from an empty one; no guessing from the last number in the text, because a guessed answer
    would turn into a spurious reward during terminal-guided annotation.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    boxed = last_boxed(text)
    return None if boxed is None else boxed.strip()


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------

_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textsf|texttt|textnormal|mathrm|mathbf|mathit|mathsf|"
    r"mathtt|mathnormal|mbox|hbox|operatorname)\s*\{"
)
_SIZING_RE = re.compile(
    r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|Biggl|Biggr|big|Big|bigg|Bigg)(?![a-zA-Z])"
)
_SIMPLE_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
    ("\\cfrac", "\\frac"),
    ("\\dbinom", "\\binom"),
    ("\\tbinom", "\\binom"),
    ("\\displaystyle", " "),
    ("\\leq", "\\le"),
    ("\\geq", "\\ge"),
    ("\\neq", "\\ne"),
    ("\\varnothing", "\\emptyset"),
    ("\\$", " "),
    ("\\qquad", " "),
    ("\\quad", " "),
    ("~", " "),
)
#: ``\\`` (a row break, kept) or a spacing command: ``\!`` (dropped, it glues ``10,\!080``)
#: and ``\,`` ``\;`` ``\:`` ``\ `` (become spaces).
_SPACING_RE = re.compile(r"\\\\|\\[,;:! ]")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])|°")
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_CHOICE_RE = re.compile(r"\(([A-Za-z])\)")
_ASSIGN_RE = re.compile(
    r"(?:[a-zA-Z]|\\[a-zA-Z]+)\s*(?:_\s*\{?\s*[a-zA-Z0-9]+\s*\}?)?\s*(?:=|\\in(?![a-zA-Z]))\s*"
)
_SINGLE_BRACED_RE = re.compile(r"([_^])\{([^{}\\\s])\}")
_UNIT_EXP_RE = re.compile(r"\^\{?\d\}?")
_ARG_CMD_RE = re.compile(r"\\(frac|binom|sqrt)(?![a-zA-Z])")
_CMD_TAIL_RE = re.compile(r"\\[a-zA-Z]+$")


def _spacing_replacement(m: re.Match[str]) -> str:
    token = m.group(0)
    return token if token == "\\\\" else ("" if token == "\\!" else " ")


def _strip_delimiters(s: str) -> str:
    """Drop math delimiters around the whole answer: ``$...$``, ``\\(...\\)``, ``\\[...\\]``."""
    while True:
        t = s.strip()
        if len(t) >= 2 and t[0] == "$" and t[-1] == "$":
            s = t.strip("$")
        elif t[:2] + t[-2:] in ("\\(\\)", "\\[\\]"):
            s = t[2:-2]
        else:
            return t


def _apply_edits(s: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply non-overlapping ``(start, end, replacement)`` edits given in original positions."""
    if not edits:
        return s
    out: list[str] = []
    pos = 0
    for start, end, text in sorted(edits, key=lambda e: (e[0], e[1])):
        out.append(s[pos:start])
        out.append(text)
        pos = end
    out.append(s[pos:])
    return "".join(out)


def _unwrap_text_commands(s: str) -> str:
    """Replace ``\\text{X}``-like wrappers by `` X `` (spaces keep ``5\\text{cm}`` a unit).

    Works on brace pairs computed once, so nested wrappers cost one linear pass, not one each.
    """
    matches = list(_TEXT_CMD_RE.finditer(s))
    if not matches:
        return s
    pairs = _brace_pairs(s)
    edits: list[tuple[int, int, str]] = []
    for m in matches:
        close = pairs.get(m.end() - 1)
        if close is not None:
            edits += [(m.start(), m.end(), " "), (close, close + 1, " ")]
    return _apply_edits(s, edits)


_COMMAND_RE = re.compile(r"\\[a-zA-Z]+")


def _arg_span(s: str, j: int, pairs: dict[int, int]) -> tuple[int, int, bool] | None:
    """Span ``(start, end, braced)`` of the TeX argument at ``j`` (after spaces), or None."""
    n = len(s)
    while j < n and s[j] == " ":
        j += 1
    if j >= n:
        return None
    if s[j] == "{":
        close = pairs.get(j)
        return None if close is None else (j, close + 1, True)
    if s[j] == "\\":
        m = _COMMAND_RE.match(s, j)
        return None if m is None else (j, m.end(), False)
    if s[j].isalnum():
        return j, j + 1, False
    return None


def _brace_arguments(s: str) -> str:
    r"""Brace the arguments of ``\frac``, ``\binom``, ``\sqrt``: ``\frac43`` -> ``\frac{4}{3}``.

    Only unbraced one-token arguments get braces; the scan then continues *inside* braced ones,
    so nested commands are handled in one linear pass without recursion.
    """
    matches = list(_ARG_CMD_RE.finditer(s))
    if not matches:
        return s
    pairs = _brace_pairs(s)
    edits: list[tuple[int, int, str]] = []
    for m in matches:
        j = m.end()
        if m.group(1) == "sqrt":
            nargs = 1
            if s[j : j + 1] == "[":
                close = s.find("]", j)
                if close == -1:
                    continue
                j = close + 1
        else:
            nargs = 2
        for _ in range(nargs):
            span = _arg_span(s, j, pairs)
            if span is None:
                break
            start, end, braced = span
            if not braced:
                edits += [(start, start, "{"), (end, end, "}")]
            j = end
    return _apply_edits(s, edits)


def _strip_units(s: str) -> tuple[str, bool]:
    """Drop trailing unit words (``5 cm``, ``12 sq units``, ``864 inches^2``) after a number.

    Only words of two or more letters, separated from a head that evaluates to a constant, are
    dropped, so ``3 R^2`` or ``2k`` keep their variables. Returns the text and whether one of
    the dropped words was ``percent``.
    """
    tokens = s.split(" ")
    k = len(tokens)
    if k >= 2 and _UNIT_EXP_RE.fullmatch(tokens[-1]):
        k -= 1
    words_end = k
    while k > 1 and tokens[k - 1].isascii() and tokens[k - 1].isalpha():
        k -= 1
    if k == words_end or k == 0:
        return s, False
    words = tokens[k:words_end]
    if sum(len(w) for w in words) < 2 or (len(words) == 1 and len(words[0]) < 2):
        return s, False
    head = " ".join(tokens[:k])
    compact = _remove_spaces(head)
    if not _THOUSANDS_RE.fullmatch(compact) and _evaluate(compact) is None:
        return s, False
    percent = any(w.lower() in ("percent", "percents") for w in words)
    return head, percent


def _remove_spaces(s: str) -> str:
    """Remove spaces, except one between a ``\\command`` and a letter (``\\cot x``, ``\\pi r``)."""
    if " " not in s:
        return s
    out: list[str] = []
    prev = ""
    for part in s.split(" "):
        if not part:
            continue
        if out and part[0].isalpha() and _CMD_TAIL_RE.search(prev):
            out.append(" ")
        out.append(part)
        prev = part
    return "".join(out)


def _normalize(s: str) -> tuple[str, bool]:
    """Normalise an answer; also report whether it carried a percent sign (see module docs)."""
    s = s.strip()
    boxed = last_boxed(s)
    if boxed is not None:
        s = boxed
    s = _strip_delimiters(s)
    if len(s) > _MAX_NORMALIZE_CHARS:
        return s, False  # junk, not an answer; keep the work linear and let the timeout judge
    s = s.replace("\n", " ").replace("\r", " ").replace("\t", " ")
    s = re.sub(r"\\(?:left|right)\s*\.", " ", s)
    s = _SIZING_RE.sub("", s)
    s = _SPACING_RE.sub(_spacing_replacement, s)
    for old, new in _SIMPLE_REPLACEMENTS:
        s = s.replace(old, new)
    s = _unwrap_text_commands(s)
    s = _DEGREE_RE.sub(" ", s)
    percent = "%" in s
    s = s.replace("\\%", " ").replace("%", " ")
    s = re.sub(r"\s+", " ", s).strip()
    s = s.rstrip(" .").strip()
    if s.startswith("$") and not s.endswith("$"):
        s = s[1:].strip()
    m = _ASSIGN_RE.match(s)
    if m is not None and m.end() < len(s) and "=" not in s[m.end() :]:
        s = s[m.end() :]
    s = _brace_arguments(s)
    s, unit_percent = _strip_units(s)
    percent = percent or unit_percent
    s = _remove_spaces(s)
    s = _SINGLE_BRACED_RE.sub(r"\1\2", s)
    s = s.rstrip(".")
    if s.startswith("+"):
        s = s[1:]
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    m = _CHOICE_RE.fullmatch(s)
    if m is not None:
        s = m.group(1)
    return s, percent


def normalize_answer(s: str) -> str:
    r"""Return a canonical string form of an answer, for display, hashing and vote grouping.

    The normalisation is the one the grader compares with (boxed wrapper, delimiters, units,
    ``\text{}``, spacing commands, ``\dfrac``, ``x =`` prefixes, thousands separators, ... are
    removed; see the module docstring). Two answers with the same non-empty normal form are
    always equivalent; the converse does not hold (``0.5`` and ``\frac{1}{2}``), use
    :func:`is_equivalent` for that.
    """
    text = _as_text(s, "s")
    return _normalize(text)[0]


# --------------------------------------------------------------------------------------------
# In-process constant evaluator (the numeric fast path)
# --------------------------------------------------------------------------------------------


class _EvalError(Exception):
    """The text is not a constant expression the fast evaluator understands."""


_TOKEN_RE = re.compile(r"(\d+\.?\d*|\.\d+)|(\\[a-zA-Z]+)|(\\[{}])|(\S)")
_MIXED_RE = re.compile(r"([-+]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")
_ATOM_CMDS = frozenset({"\\frac", "\\sqrt", "\\pi", "\\infty", "\\binom"})
_MUL_CMDS = frozenset({"\\cdot", "\\times"})


class _Evaluator:
    """Recursive-descent evaluator for constant LaTeX arithmetic.

    Supports numbers, ``+ - * /``, ``\\cdot``, ``\\times``, ``\\div``, implicit multiplication,
    ``^`` (TeX's one-token exponent), ``\\frac``, ``\\sqrt[n]{}``, ``\\binom``, ``!``, ``\\pi``,
    ``i`` and ``\\infty``. Rationals stay exact (``Fraction``) until an irrational operation;
    anything else (variables, functions) raises :class:`_EvalError`, leaving the pair to the
    symbolic path. Exponents are bounded so this can never run long.
    """

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        for m in _TOKEN_RE.finditer(text):
            if m.group(1) is not None:
                self.tokens.append(("num", m.group(1)))
            elif m.group(2) is not None:
                self.tokens.append(("cmd", m.group(2)))
            elif m.group(3) is not None:
                raise _EvalError(m.group(3))
            else:
                self.tokens.append(("ch", m.group(4)))
        self.pos = 0

    def run(self) -> _Value:
        if not self.tokens:
            raise _EvalError("empty")
        value = self.expr()
        if self.pos != len(self.tokens):
            raise _EvalError("trailing input")
        return value

    # -- token helpers ------------------------------------------------------------------------
    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise _EvalError("unexpected end")
        self.pos += 1
        return tok

    def expect(self, ch: str) -> None:
        if self.take() != ("ch", ch):
            raise _EvalError(f"expected {ch}")

    def take_digit(self) -> _Value:
        """TeX reads one character for ``^23`` or ``\\frac12``: split a multi-digit token."""
        _, text = self.take()
        if len(text) > 1:
            self.pos -= 1
            self.tokens[self.pos] = ("num", text[1:])
        return Fraction(int(text[0])) if text[0].isdigit() else _number(text)

    def starts_atom(self, tok: tuple[str, str] | None) -> bool:
        if tok is None:
            return False
        kind, text = tok
        return (
            (kind == "ch" and text in "({i")
            or (kind == "cmd" and text in _ATOM_CMDS)
            or (kind == "num" and self.tokens[self.pos - 1][0] != "num")
        )

    # -- grammar ------------------------------------------------------------------------------
    def expr(self) -> _Value:
        value = self.term()
        while (tok := self.peek()) in (("ch", "+"), ("ch", "-")):
            self.pos += 1
            rhs = self.term()
            value = value + rhs if tok == ("ch", "+") else value - rhs
        return value

    def term(self) -> _Value:
        value = self.unary()
        while True:
            tok = self.peek()
            if tok in (("ch", "*"), ("ch", "/"), ("cmd", "\\div")) or (
                tok is not None and tok[0] == "cmd" and tok[1] in _MUL_CMDS
            ):
                self.pos += 1
                rhs = self.unary()
                value = value / rhs if tok in (("ch", "/"), ("cmd", "\\div")) else value * rhs
            elif self.pos > 0 and self.starts_atom(tok):
                value = value * self.power()
            else:
                return value

    def unary(self) -> _Value:
        tok = self.peek()
        if tok == ("ch", "-"):
            self.pos += 1
            return -self.unary()
        if tok == ("ch", "+"):
            self.pos += 1
            return self.unary()
        return self.power()

    def power(self) -> _Value:
        base = self.postfix()
        if self.peek() == ("ch", "^"):
            self.pos += 1
            return _power(base, self.exponent())
        return base

    def exponent(self) -> _Value:
        tok = self.peek()
        if tok == ("ch", "-"):
            self.pos += 1
            return -self.exponent()
        if tok is not None and tok[0] == "num":
            return self.take_digit()
        return self.atom()

    def postfix(self) -> _Value:
        value = self.atom()
        while self.peek() == ("ch", "!"):
            self.pos += 1
            if not (isinstance(value, Fraction) and value.denominator == 1 and 0 <= value <= 1000):
                raise _EvalError("factorial")
            value = Fraction(math.factorial(int(value)))
        return value

    def argument(self) -> _Value:
        tok = self.peek()
        if tok is not None and tok[0] == "num":
            return self.take_digit()
        return self.atom()

    def atom(self) -> _Value:
        kind, text = self.take()
        if kind == "num":
            return _number(text)
        if kind == "ch":
            if text in "({":
                value = self.expr()
                self.expect(")" if text == "(" else "}")
                return value
            if text == "i":
                return 1j
            raise _EvalError(text)
        if text == "\\frac":
            num = self.argument()
            den = self.argument()
            return num / den
        if text == "\\sqrt":
            index: _Value = Fraction(2)
            if self.peek() == ("ch", "["):
                self.pos += 1
                index = self.expr()
                self.expect("]")
            return _root(self.argument(), index)
        if text == "\\binom":
            n, k = self.argument(), self.argument()
            if not all(isinstance(v, Fraction) and v.denominator == 1 for v in (n, k)):
                raise _EvalError("binom")
            if not 0 <= n <= 100_000:
                raise _EvalError("binom")
            return Fraction(math.comb(int(n), int(k))) if k >= 0 else Fraction(0)
        if text == "\\pi":
            return math.pi
        if text == "\\infty":
            return math.inf
        raise _EvalError(text)


def _number(text: str) -> Fraction:
    try:
        return Fraction(Decimal(text))
    except (InvalidOperation, ValueError) as exc:
        raise _EvalError(text) from exc


def _power(base: _Value, exp: _Value) -> _Value:
    if isinstance(base, Fraction) and isinstance(exp, Fraction) and exp.denominator == 1:
        e = exp.numerator
        if base == 0 and e < 0:
            raise ZeroDivisionError
        bits = max(base.numerator.bit_length(), base.denominator.bit_length())
        if base in (0, 1, -1) or abs(e) * bits <= _MAX_EXACT_BITS:
            return base**e
        raise _EvalError("power too large")
    if isinstance(exp, Fraction) and exp.denominator == 1 and abs(exp) <= 10_000:
        return (complex(base) if isinstance(base, complex) else float(base)) ** int(exp)
    if isinstance(base, complex) or isinstance(exp, complex) or _real(base) < 0:
        return complex(base) ** complex(exp)
    return float(base) ** float(exp)


def _real(v: _Value) -> float:
    return v.real if isinstance(v, complex) else float(v)


def _root(x: _Value, index: _Value) -> _Value:
    if isinstance(x, Fraction) and index == 2 and x >= 0:
        rn, rd = math.isqrt(x.numerator), math.isqrt(x.denominator)
        if rn * rn == x.numerator and rd * rd == x.denominator:
            return Fraction(rn, rd)
        return math.sqrt(x)
    if index == 0:
        raise ZeroDivisionError
    if isinstance(x, complex) or _real(x) < 0:
        return cmath.exp(cmath.log(complex(x)) / complex(index))
    return float(x) ** (1.0 / _real(index))


def _evaluate(s: str) -> _Value | None:
    """The value of a constant expression, or None when it is not one (or is not finite)."""
    if not s or len(s) > _FAST_PATH_MAX_CHARS:
        return None
    m = _MIXED_RE.fullmatch(s)
    if m is not None and int(m.group(3)) < int(m.group(4)):
        sign = -1 if m.group(1) == "-" else 1
        return sign * (int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4))))
    try:
        value = _Evaluator(s).run()
        if isinstance(value, Fraction):
            return value
        z = complex(value)
    except (_EvalError, ArithmeticError, ValueError, TypeError, RecursionError):
        return None
    if cmath.isnan(z) or (cmath.isinf(z) and "\\infty" not in s):
        return None
    return value


def _numbers_close(
    a: _Value, b: _Value, rel_tol: float, abs_tol: float, exact: bool = False
) -> bool:
    """Numeric equality; ``exact`` (both sides written as exact rationals) disables tolerance."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        if a == b:
            return True
        if exact or (a.denominator == 1 and b.denominator == 1):
            return False
        return abs(a - b) <= Fraction(rel_tol) * max(abs(a), abs(b))
    try:
        za, zb = complex(a), complex(b)
    except OverflowError:
        return False
    if cmath.isinf(za) or cmath.isinf(zb):
        return za == zb
    diff = abs(za - zb)
    return diff <= rel_tol * max(abs(za), abs(zb)) or diff <= abs_tol


# --------------------------------------------------------------------------------------------
# Structural comparison (tuples, intervals, sets, unions, matrices, lists)
# --------------------------------------------------------------------------------------------

_MATRIX_RE = re.compile(r"\\begin\{([pbvBV]?matrix|smallmatrix)\}(.*)\\end\{\1\}", re.S)


def _split_top(s: str, sep: str) -> list[str]:
    """Split ``s`` on ``sep`` outside brackets (depth counts ``( [ {`` against ``) ] }``).

    Brackets need not match in kind, so half-open intervals such as ``[0,1)`` nest correctly.
    A command separator (``\\cup``) only matches as a whole command, not as a prefix.
    """
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(s)
    command_sep = sep[:1] == "\\" and sep[1:2].isalpha()
    while i < n:
        if (
            depth == 0
            and s.startswith(sep, i)
            and not (command_sep and s[i + len(sep) : i + len(sep) + 1].isalpha())
        ):
            parts.append(s[start:i])
            i += len(sep)
            start = i
            continue
        c = s[i]
        if c == "\\":
            nxt = s[i + 1 : i + 2]
            if nxt in ("{", "}"):
                depth += 1 if nxt == "{" else -1
            i += 2 if nxt in ("{", "}", "\\") else 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1
    parts.append(s[start:])
    return parts


def _outer_brackets(s: str) -> tuple[str, str, str] | None:
    """``(open, close, inner)`` when one bracket pair (``( [ \\{`` / ``) ] \\}``) spans ``s``."""
    if s.startswith("\\{") and s.endswith("\\}"):
        opening, closing = "\\{", "\\}"
    elif s[:1] in ("(", "[") and s[-1:] in (")", "]"):
        opening, closing = s[0], s[-1]
    else:
        return None
    inner = s[len(opening) : len(s) - len(closing)]
    depth = 0
    i = 0
    n = len(inner)
    while i < n:
        c = inner[i]
        if c == "\\":
            nxt = inner[i + 1 : i + 2]
            if nxt in ("{", "}"):
                depth += 1 if nxt == "{" else -1
            i += 2 if nxt in ("{", "}", "\\") else 1
        else:
            if c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
            i += 1
        if depth < 0:
            return None
    return (opening, closing, inner) if depth == 0 else None


def _expand_pm(s: str) -> list[str] | None:
    r"""``a\pm b`` -> ``[a+b, a-b]`` when ``\pm`` occurs once at the top level, else None."""
    parts = _split_top(s, "\\pm")
    if len(parts) != 2 or not parts[1]:
        return None
    head, tail = parts
    if "\\mp" in s:
        return None
    return [f"{head}+{tail}" if head else tail, f"{head}-{tail}" if head else f"-{tail}"]


class _Struct:
    """A parsed answer: an atom, an (un)ordered sequence, a union or a matrix."""

    __slots__ = ("brackets", "items", "kind", "text")

    def __init__(
        self,
        kind: str,
        text: str = "",
        items: list[_Struct] | None = None,
        brackets: tuple[str, str] = ("", ""),
    ) -> None:
        self.kind = kind  # "atom" | "tuple" | "list" | "set" | "union" | "matrix"
        self.text = text
        self.items = items or []
        self.brackets = brackets


def _parse_struct(s: str, depth: int = 0) -> _Struct:
    if depth > 20:
        return _Struct("atom", s)
    m = _MATRIX_RE.fullmatch(s)
    if m is not None:
        rows = [r for r in _split_top(m.group(2), "\\\\") if r.strip()]
        return _Struct(
            "matrix",
            s,
            [_Struct("tuple", r, [_Struct("atom", c) for c in _split_top(r, "&")]) for r in rows],
        )
    union = _split_top(s, "\\cup")
    if len(union) > 1:
        return _Struct("union", s, [_parse_struct(p, depth + 1) for p in union])
    outer = _outer_brackets(s)
    if outer is not None:
        opening, closing, inner = outer
        parts = _split_top(inner, ",")
        if opening == "\\{":
            return _Struct("set", s, _unordered_items(parts, depth), (opening, closing))
        if len(parts) == 1 and opening == "(" and closing == ")":
            return _parse_struct(inner, depth + 1)
        items = [_parse_struct(p, depth + 1) for p in parts]
        return _Struct("tuple", s, items, (opening, closing))
    parts = _split_top(s, ",")
    if len(parts) > 1:
        return _Struct("list", s, _unordered_items(parts, depth))
    expanded = _expand_pm(s)
    if expanded is not None:
        return _Struct("list", s, [_Struct("atom", e) for e in expanded])
    return _Struct("atom", s)


def _unordered_items(parts: list[str], depth: int) -> list[_Struct]:
    items: list[_Struct] = []
    for p in parts:
        expanded = _expand_pm(p)
        if expanded is None:
            items.append(_parse_struct(p, depth + 1))
        else:
            items.extend(_Struct("atom", e) for e in expanded)
    return items


_WORD_RE = re.compile(r"[A-Za-z]+")


class _FastComparer:
    """Three-valued comparison of parsed answers: True, False, or None (undecided)."""

    def __init__(self, rel_tol: float, abs_tol: float) -> None:
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol
        self._values: dict[str, _Value | None] = {}

    def value(self, s: str) -> _Value | None:
        if s not in self._values:
            self._values[s] = _evaluate(s)
        return self._values[s]

    def is_simple(self, node: _Struct) -> bool:
        """A number or a plain word: something that can never equal a tuple or a set."""
        return node.kind == "atom" and (
            self.value(node.text) is not None or _WORD_RE.fullmatch(node.text) is not None
        )

    def compare(self, a: _Struct, b: _Struct) -> _Verdict:
        if a.kind == "atom" and b.kind == "atom":
            return self.compare_atoms(a.text, b.text)
        if a.kind == "atom" or b.kind == "atom":
            return False if (self.is_simple(a) or self.is_simple(b)) else None
        if {a.kind, b.kind} == {"tuple", "set"}:
            return False  # ordered pair / interval vs set: different objects, like other brackets
        if a.kind != b.kind:
            return None
        if a.kind == "tuple":
            if a.brackets != b.brackets or len(a.items) != len(b.items):
                return False
            return self.all_pairs(a.items, b.items)
        if a.kind == "matrix":
            if len(a.items) != len(b.items) or any(
                len(ra.items) != len(rb.items) for ra, rb in zip(a.items, b.items, strict=True)
            ):
                return False
            return self.all_pairs(
                [x for r in a.items for x in r.items], [y for r in b.items for y in r.items]
            )
        # list, set, union: unordered
        if len(a.items) != len(b.items):
            return False
        if len(a.items) > _MAX_LIST_ITEMS:
            return None
        return self.match_unordered(a.items, b.items)

    def all_pairs(self, xs: list[_Struct], ys: list[_Struct]) -> _Verdict:
        verdict: _Verdict = True
        for x, y in zip(xs, ys, strict=True):
            v = self.compare(x, y)
            if v is False:
                return False
            if v is None:
                verdict = None
        return verdict

    def match_unordered(self, xs: list[_Struct], ys: list[_Struct]) -> _Verdict:
        table = [[self.compare(x, y) for y in ys] for x in xs]
        if _has_perfect_matching(table, lambda v: v is True):
            return True
        if not _has_perfect_matching(table, lambda v: v is not False):
            return False
        return None

    def compare_atoms(self, a: str, b: str) -> _Verdict:
        if a == b:
            return True
        va, vb = self.value(a), self.value(b)
        if va is not None and vb is not None:
            exact = "." not in a and "." not in b
            return _numbers_close(va, vb, self.rel_tol, self.abs_tol, exact)
        word_a = _WORD_RE.fullmatch(a) is not None
        word_b = _WORD_RE.fullmatch(b) is not None
        if word_a and word_b:
            return a.lower() == b.lower()
        if (word_a and vb is not None) or (word_b and va is not None):
            return False
        return None


def _has_perfect_matching(table: list[list[_Verdict]], ok: Callable[[_Verdict], bool]) -> bool:
    """Bipartite perfect matching (Kuhn's algorithm) over the edges where ``ok`` holds."""
    n = len(table)
    match_of: list[int] = [-1] * n

    def augment(i: int, seen: list[bool]) -> bool:
        for j in range(n):
            if ok(table[i][j]) and not seen[j]:
                seen[j] = True
                if match_of[j] == -1 or augment(match_of[j], seen):
                    match_of[j] = i
                    return True
        return False

    return all(augment(i, [False] * n) for i in range(n))


def _fast_verdict(
    pred: str, ref: str, pred_pct: bool, ref_pct: bool, rel_tol: float, abs_tol: float
) -> _Verdict:
    """Decide equivalence of two normalised answers in process, or None when undecidable here."""
    if pred == ref:
        return True
    if len(pred) > _FAST_PATH_MAX_CHARS or len(ref) > _FAST_PATH_MAX_CHARS:
        return None
    comparer = _FastComparer(rel_tol, abs_tol)
    verdict = comparer.compare(_parse_struct(pred), _parse_struct(ref))
    if verdict is not True and pred_pct != ref_pct:
        vp, vr = comparer.value(pred), comparer.value(ref)
        if vp is not None and vr is not None:
            if pred_pct:
                vp = vp / 100
            else:
                vr = vr / 100
            if _numbers_close(vp, vr, rel_tol, abs_tol):
                return True
    return verdict


# --------------------------------------------------------------------------------------------
# Slow path: math-verify + sympy, run inside the worker process
# --------------------------------------------------------------------------------------------


def _wrap_math(s: str) -> str:
    return s if "$" in s or "\\boxed" in s else f"${s}$"


def _heavy_equivalent(
    pred_norm: str, ref_norm: str, pred_raw: str, ref_raw: str, rel_tol: float
) -> bool:
    """Symbolic comparison (runs in a worker; may take arbitrarily long on hostile input).

    math-verify first, on the normalised and then on the raw answers (its parser knows LaTeX
    conventions our normalisation may have flattened); then sympy ``simplify(a - b) == 0`` and a
    numeric check on ``latex2sympy`` parses of the normalised answers.
    """
    from math_verify import parse, verify

    tried: set[tuple[str, str]] = set()
    for pred, ref in ((pred_norm, ref_norm), (pred_raw, ref_raw)):
        if (pred, ref) in tried or not pred.strip() or not ref.strip():
            continue
        tried.add((pred, ref))
        gold = parse(_wrap_math(ref), parsing_timeout=None)  # type: ignore[arg-type]
        target = parse(_wrap_math(pred), parsing_timeout=None)  # type: ignore[arg-type]
        if gold and target and verify(gold, target, timeout_seconds=None):
            return True
    return _sympy_equivalent(pred_norm, ref_norm, rel_tol)


def _sympy_equivalent(pred: str, ref: str, rel_tol: float) -> bool:
    """Last-resort sympy comparison of two LaTeX expressions (exceptions mean "not equal")."""
    try:
        import sympy
        from latex2sympy2_extended import latex2sympy  # math-verify's own LaTeX parser

        a = latex2sympy(pred)
        b = latex2sympy(ref)
        if not isinstance(a, sympy.Expr) or not isinstance(b, sympy.Expr):
            return False
        if sympy.simplify(a - b) == 0:
            return True
        if not a.free_symbols and not b.free_symbols:
            va, vb = complex(sympy.N(a, 30)), complex(sympy.N(b, 30))
            return abs(va - vb) <= rel_tol * max(abs(va), abs(vb))
    except Exception:  # any parse/simplify failure means "not shown equal"
        logger.debug("sympy fallback failed", exc_info=True)
    return False


def _worker_main() -> None:
    """Entry point of a grading worker process: JSON requests on stdin, JSON replies on stdout.

    stdout is reserved for the protocol (anything the libraries print goes to stderr). A thread
    exits the process when the parent disappears, so killed parents leave no orphans behind
    (unless the worker is stuck inside one C call, which the parent's kill handles).
    """
    protocol = os.fdopen(os.dup(1), "w", encoding="ascii", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    if len(sys.argv) > 2 and int(sys.argv[2]) > 0:
        with contextlib.suppress(ImportError, ValueError, OSError):
            import resource

            limit = int(sys.argv[2]) * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    parent = os.getppid()

    def watch_parent() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    _heavy_equivalent("1", "1", "1", "1", DEFAULT_REL_TOL)  # import + warm up before "ready"
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin.buffer:
        request = json.loads(line)
        reply: dict[str, Any] = {"id": request["id"]}
        try:
            reply["result"] = bool(_heavy_equivalent(*request["args"]))
        except Exception as exc:  # reported to the parent, which logs it
            reply["error"] = f"{type(exc).__name__}: {exc}"[:500]
        protocol.write(json.dumps(reply) + "\n")


_WORKER_BOOTSTRAP = (
    "import sys, importlib.util as u\n"
    "sys.path[:] = [p for p in sys.path if p not in ('', '.')]\n"
    "s = u.spec_from_file_location('_rstar_math_grading_worker', sys.argv[1])\n"
    "m = u.module_from_spec(s)\n"
    "sys.modules[s.name] = m\n"
    "s.loader.exec_module(m)\n"
    "m._worker_main()\n"
)


class _WorkerDied(RuntimeError):
    pass


class _Worker:
    """One grading subprocess plus a reader thread that queues its replies."""

    def __init__(self, memory_limit_mb: int | None) -> None:
        if not sys.executable:
            raise OSError("sys.executable is unknown, cannot start a Python worker")
        cmd = [
            sys.executable,
            "-c",
            _WORKER_BOOTSTRAP,
            os.path.abspath(__file__),
            str(memory_limit_mb or 0),
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,
        )
        self.replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._read, name="rstar-grading-reader", daemon=True).start()

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            for line in stdout:
                try:
                    self.replies.put(json.loads(line))
                except ValueError:
                    logger.debug("ignoring malformed grading-worker line %r", line[:200])
        finally:
            self.replies.put(None)

    def wait_ready(self, timeout_s: float) -> None:
        try:
            msg = self.replies.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"grading worker not ready after {timeout_s:.0f}s") from None
        if msg is None or not msg.get("ready"):
            raise _WorkerDied(f"grading worker exited during start-up (code {self.proc.poll()})")

    def call(self, args: list[Any], timeout_s: float) -> dict[str, Any]:
        self._next_id += 1
        line = json.dumps({"id": self._next_id, "args": args}) + "\n"
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(line.encode("ascii"))
            stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise _WorkerDied("grading worker is gone") from exc
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                msg = self.replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError from None
            if msg is None:
                raise _WorkerDied(f"grading worker died (exit code {self.proc.poll()})")
            if msg.get("id") == self._next_id:
                return msg

    def kill(self) -> None:
        _kill_process(self.proc)


def _kill_process(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        if proc.poll() is None:
            proc.kill()
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout):
        with contextlib.suppress(OSError):
            if stream is not None:
                stream.close()


def _shutdown_workers(owner_pid: int, workers: list[_Worker]) -> None:
    """Finaliser: kill the workers, but only in the process that started them (not a fork)."""
    if os.getpid() != owner_pid:
        return
    for worker in list(workers):
        worker.kill()
    workers.clear()


# --------------------------------------------------------------------------------------------
# Grader
# --------------------------------------------------------------------------------------------


def _check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}"
        )
    return float(value)


class Grader:
    r"""Decides whether a predicted answer equals a reference answer, with a hard timeout.

    A Grader owns a small pool of worker processes for the symbolic path (started lazily, one
    per concurrent slow comparison up to ``max_workers``) and a cache of slow-path results.
    It is safe to share between threads; each thread's call gets its own worker, and a worker
    that exceeds the timeout is killed and replaced without disturbing the others.

    Args:
        timeout_s: default time budget of one comparison. Counted from the call until the
            answer, including waiting for a free worker; the one-off start of a worker process
            (about a second: Python + sympy + math-verify) is not counted against it but is
            bounded by ``startup_timeout_s``.
        rel_tol: relative tolerance of numeric comparison (two exact rationals compare exactly).
        abs_tol: absolute tolerance, used only when a value is inexact (``\pi``, roots), so that
            ``\sqrt{2}^2 - 2`` equals ``0`` despite rounding.
        max_workers: most worker processes alive at once (default: CPU count, between 2 and 8).
        symbolic: when False, never start workers: pairs the fast path cannot decide grade as
            not equivalent. For environments that cannot spawn processes, or for speed.
        startup_timeout_s: how long a new worker may take to become ready.
        memory_limit_mb: address-space limit of each worker (POSIX), so a runaway sympy
            computation dies with MemoryError instead of swapping the machine; None for none.
        cache_size: number of slow-path results kept (answers repeat a lot across rollouts).
    """

    def __init__(
        self,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        rel_tol: float = DEFAULT_REL_TOL,
        abs_tol: float = DEFAULT_ABS_TOL,
        max_workers: int | None = None,
        symbolic: bool = True,
        startup_timeout_s: float = 60.0,
        memory_limit_mb: int | None = 4096,
        cache_size: int = 16384,
    ) -> None:
        self.timeout_s = _check_positive("timeout_s", timeout_s)
        self.rel_tol = _check_positive("rel_tol", rel_tol, allow_zero=True)
        self.abs_tol = _check_positive("abs_tol", abs_tol, allow_zero=True)
        self.startup_timeout_s = _check_positive("startup_timeout_s", startup_timeout_s)
        if max_workers is None:
            max_workers = max(2, min(8, os.cpu_count() or 2))
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive int, got {max_workers!r}")
        if memory_limit_mb is not None and (
            not isinstance(memory_limit_mb, int) or memory_limit_mb <= 0
        ):
            raise ValueError(
                f"memory_limit_mb must be a positive int or None, got {memory_limit_mb!r}"
            )
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0, got {cache_size!r}")
        self.max_workers = max_workers
        self.symbolic = bool(symbolic)
        self.memory_limit_mb = memory_limit_mb
        self.cache_size = cache_size
        self._closed = False
        self._init_pool_state()
        self._cache: OrderedDict[tuple[str, ...], tuple[bool, float | None]] = OrderedDict()

    def _init_pool_state(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._n_alive = 0
        self._finalizer = weakref.finalize(self, _shutdown_workers, self._pid, self._all)

    def _check_fork(self) -> None:
        """In a forked child, forget the parent's workers (they are not ours to use or kill)."""
        if self._pid != os.getpid():
            self._finalizer.detach()
            self._init_pool_state()
            self._cache = OrderedDict()

    # -- public API ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def num_workers(self) -> int:
        """Number of worker processes currently alive (0 until a slow comparison needs one)."""
        self._check_fork()
        with self._cond:
            return len(self._all)

    def is_equivalent(
        self,
        prediction: str,
        reference: str,
        timeout_s: float | None = None,
        *,
        rel_tol: float | None = None,
    ) -> bool:
        r"""Return whether ``prediction`` is mathematically equivalent to ``reference``.

        Both may be bare answers (``\frac{1}{2}``) or whole solutions (the last ``\boxed{}`` is
        used). Numbers are accepted too. The fast path answers most pairs in microseconds; the
        rest go to math-verify/sympy in a worker process. Never raises for odd answer text and
        never blocks longer than ``timeout_s`` (default: the grader's) plus a small slack: on
        timeout it logs a warning and returns False.

        Raises:
            TypeError: ``prediction`` or ``reference`` is not a str or a number.
            RuntimeError: the grader is closed, or a worker process cannot be started.
        """
        pred_text = _as_text(prediction, "prediction")
        ref_text = _as_text(reference, "reference")
        budget = self.timeout_s if timeout_s is None else _check_positive("timeout_s", timeout_s)
        tol = self.rel_tol if rel_tol is None else _check_positive("rel_tol", rel_tol, True)
        if self._closed:
            raise RuntimeError("Grader is closed")
        pred, pred_pct = _normalize(pred_text)
        ref, ref_pct = _normalize(ref_text)
        if not pred or not ref:
            return False
        verdict = _fast_verdict(pred, ref, pred_pct, ref_pct, tol, self.abs_tol)
        if verdict is not None:
            return verdict
        if not self.symbolic:
            return False
        pred_raw = _raw_core(pred_text)
        ref_raw = _raw_core(ref_text)
        return self._slow(pred, ref, pred_raw, ref_raw, tol, budget)

    def warmup(self) -> None:
        """Start one worker now, so the first slow comparison does not pay the start-up."""
        if not self.symbolic:
            return
        worker, _ = self._acquire(time.monotonic() + self.startup_timeout_s)
        self._release(worker, healthy=True)

    def close(self) -> None:
        """Kill the worker processes. Further calls raise RuntimeError. Idempotent."""
        self._closed = True
        self._check_fork()
        with self._cond:
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for worker in idle:
            self._forget(worker)
            worker.kill()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Grader(timeout_s={self.timeout_s}, rel_tol={self.rel_tol}, "
            f"max_workers={self.max_workers}, symbolic={self.symbolic}, closed={self._closed})"
        )

    # -- slow path ----------------------------------------------------------------------------
    def _slow(
        self, pred: str, ref: str, pred_raw: str, ref_raw: str, rel_tol: float, budget: float
    ) -> bool:
        self._check_fork()
        key = (pred, ref, pred_raw, ref_raw, repr(rel_tol))
        with self._cond:
            cached = self._cache.get(key)
            if cached is not None:
                result, timed_out_at = cached
                if timed_out_at is None or budget <= timed_out_at:
                    self._cache.move_to_end(key)
                    return result
        deadline = time.monotonic() + budget
        try:
            worker, startup_s = self._acquire(deadline)
        except TimeoutError:
            logger.warning(
                "grading timed out after %.1fs waiting for a free worker (max_workers=%d); "
                "treating %s vs %s as not equivalent",
                budget,
                self.max_workers,
                _short(pred),
                _short(ref),
            )
            return False
        deadline += startup_s  # a new worker's one-off start-up does not eat into the budget
        healthy = False
        timed_out_at: float | None = None
        try:
            reply = worker.call(
                [pred, ref, pred_raw, ref_raw, rel_tol], deadline - time.monotonic()
            )
            healthy = True
            if "error" in reply:
                logger.warning(
                    "grading worker error on %s vs %s: %s",
                    _short(pred),
                    _short(ref),
                    reply["error"],
                )
            result = bool(reply.get("result", False))
        except TimeoutError:
            logger.warning(
                "grading timed out after %.1fs; treating %s vs %s as not equivalent",
                budget,
                _short(pred),
                _short(ref),
            )
            result, timed_out_at = False, budget
        except _WorkerDied as exc:
            logger.warning(
                "%s while grading %s vs %s; treating as not equivalent",
                exc,
                _short(pred),
                _short(ref),
            )
            result = False
        finally:
            self._release(worker, healthy)
        with self._cond:
            if self.cache_size:
                self._cache[key] = (result, timed_out_at)
                self._cache.move_to_end(key)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return result

    def _acquire(self, deadline: float) -> tuple[_Worker, float]:
        """An idle worker, or a newly started one (if under ``max_workers``), or TimeoutError.

        Also returns the seconds spent starting a new worker (0 for an idle one).
        """
        self._check_fork()
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("Grader is closed")
                if self._idle:
                    return self._idle.pop(), 0.0
                if self._n_alive < self.max_workers:
                    self._n_alive += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self._cond.wait(remaining)
        started = time.monotonic()
        try:
            worker = _Worker(self.memory_limit_mb)
        except OSError as exc:
            self._lost_one()
            raise RuntimeError(f"cannot start a grading worker process: {exc}") from exc
        with self._cond:
            self._all.append(worker)
        try:
            worker.wait_ready(self.startup_timeout_s)
        except (TimeoutError, _WorkerDied) as exc:
            self._forget(worker)
            worker.kill()
            self._lost_one()
            raise RuntimeError(
                f"{exc}; is math-verify importable by {sys.executable}? (its stderr is above)"
            ) from exc
        return worker, time.monotonic() - started

    def _release(self, worker: _Worker, healthy: bool) -> None:
        if os.getpid() != self._pid:
            return
        with self._cond:
            if healthy and not self._closed and worker.proc.poll() is None:
                self._idle.append(worker)
                self._cond.notify()
                return
        self._forget(worker)
        worker.kill()
        self._lost_one()

    def _forget(self, worker: _Worker) -> None:
        with self._cond:
            if worker in self._all:
                self._all.remove(worker)

    def _lost_one(self) -> None:
        with self._cond:
            self._n_alive -= 1
            self._cond.notify()


def _raw_core(text: str) -> str:
    """The answer as written (boxed content if any), for math-verify's own parser."""
    boxed = last_boxed(text)
    return (text if boxed is None else boxed).strip()


def _short(s: str, limit: int = 80) -> str:
    return repr(s if len(s) <= limit else s[:limit] + "...")


# --------------------------------------------------------------------------------------------
# Module-level default grader
# --------------------------------------------------------------------------------------------

_default_grader: Grader | None = None
_default_lock = threading.Lock()


def _reset_default_after_fork() -> None:
    global _default_grader, _default_lock
    _default_lock = threading.Lock()
    _default_grader = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_default_after_fork)


def get_default_grader() -> Grader:
    """The process-wide :class:`Grader` used by :func:`is_equivalent`.

    Created on first use under a lock (so concurrent first calls share one), with the default
    settings; replaced if it was closed. Creating it starts no process. Its workers are killed
    at interpreter exit; a forked child gets a fresh one instead of sharing the parent's.
    """
    global _default_grader
    with _default_lock:
        if _default_grader is None or _default_grader.closed:
            _default_grader = Grader()
        return _default_grader


def is_equivalent(
    prediction: str,
    reference: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    rel_tol: float = DEFAULT_REL_TOL,
) -> bool:
    r"""Return whether ``prediction`` is mathematically equivalent to ``reference``.

    Convenience wrapper over :meth:`Grader.is_equivalent` on :func:`get_default_grader`; safe
    from any thread. Returns False (and logs a warning) when the comparison needs more than
    ``timeout_s`` seconds. Build your own :class:`Grader` to control workers and caching.

    >>> is_equivalent("\\dfrac{1}{2}", "0.5")
    True
    >>> is_equivalent("The answer is \\boxed{1,000}.", "1000")
    True
    """
    return get_default_grader().is_equivalent(prediction, reference, timeout_s, rel_tol=rel_tol)
