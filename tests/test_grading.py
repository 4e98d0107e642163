r"""Tests for :mod:`rstar_math.grading`.

Three groups: answer pairs built from the real MATH-500 / GSM8K answers (rewrites that must still
match, perturbations that must not), hand-written cases for every normalisation / fallback rule,
and the operational guarantees (thread safety, no signals in worker threads, hard timeouts,
forked children).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rstar_math.grading import (
    Grader,
    extract_answer,
    get_default_grader,
    is_equivalent,
    last_boxed,
    normalize_answer,
)

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rstar"

# A power tower: sympy / math-verify try to evaluate it exactly and never come back.
POWER_TOWER = "2^{2^{2^{2^{2^{2^{2^{2}}}}}}}"


# --------------------------------------------------------------------------------------------
# Fixtures and dataset-derived pairs
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(timeout_s=10.0) as g:
        yield g


def _answers(name: str) -> list[str]:
    path = DATA_DIR / name
    if not path.is_file():
        return []
    return [str(item["answer"]) for item in json.loads(path.read_text(encoding="utf-8"))]


def _bump_first_digit(s: str) -> str | None:
    m = re.search(r"\d", s)
    if m is None:
        return None
    return s[: m.start()] + str((int(m.group()) + 1) % 10) + s[m.end() :]


def _gsm8k_pairs() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """(prediction, reference, id) pairs: equivalent rewrites and non-equivalent perturbations."""
    same: list[tuple[str, str, str]] = []
    diff: list[tuple[str, str, str]] = []
    for i, ref in enumerate(_answers("GSM8K_test.json")[::13]):
        n = int(ref.replace(",", ""))
        rewrites = {
            "thousands": f"{n:,}",
            "plain": str(n),
            "boxed": f"\\boxed{{{ref}}}",
            "x=": f"x = {n}",
            "dollar": f"\\${n:,}",
            "text-unit": f"{n} \\text{{ dollars}}",
            "decimal": f"{n}.0",
            "frac": f"\\frac{{{2 * n}}}{{2}}",
            "sentence": f"So the answer is $\\boxed{{{n}}}$.",
        }
        same += [(p, ref, f"gsm8k{i}-{k}") for k, p in rewrites.items()]
        perturbed = {"plus-one": str(n + 1), "times-ten": f"{n * 10:,}"}
        if n != 0:
            perturbed["sign"] = str(-n)
        bumped = _bump_first_digit(str(n))
        if bumped is not None and int(bumped) != n:
            perturbed["digit"] = bumped
        diff += [(p, ref, f"gsm8k{i}-{k}") for k, p in perturbed.items()]
    return same, diff


_FRAC_RE = re.compile(r"(-?)\\frac\{(\d+)\}\{(\d+)\}")
_NUMBER_RE = re.compile(r"-?(?:\d+|\d*\.\d+|\\frac\{\d+\}\{\d+\})")


def _terminating_decimal(num: int, den: int) -> str | None:
    d = den
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return None
    return format(Decimal(num) / Decimal(den), "f")


def _math_pairs() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    same: list[tuple[str, str, str]] = []
    diff: list[tuple[str, str, str]] = []
    for i, ref in enumerate(_answers("math500_test.json")):
        rewrites: dict[str, str] = {"boxed": f"\\boxed{{{ref}}}", "dollars": f"${ref}$"}
        if "\\frac" in ref:
            rewrites["dfrac"] = ref.replace("\\frac", "\\dfrac")
        m = _FRAC_RE.fullmatch(ref)
        if m is not None:
            sign, num, den = m.group(1), int(m.group(2)), int(m.group(3))
            rewrites["slash"] = f"{sign}{num}/{den}"
            decimal = _terminating_decimal(num, den)
            if decimal is not None:
                rewrites["decimal"] = sign + decimal
        if re.fullmatch(r"-?\d+", ref):
            rewrites["x="] = f"x = {ref}"
            rewrites["text-unit"] = f"{ref} \\text{{ units}}"
            if abs(int(ref)) >= 1000:
                rewrites["thousands"] = f"{int(ref):,}"
        if ref.startswith("(") and ref.endswith(")") and "\\left" not in ref:
            rewrites["left-right"] = "\\left" + ref[:-1] + "\\right)"
            rewrites["spaces"] = ref.replace(",", " , ")
        same += [(p, ref, f"math{i}-{k}") for k, p in rewrites.items()]

        perturbed: dict[str, str] = {}
        bumped = _bump_first_digit(ref)
        if bumped is not None:
            perturbed["digit"] = bumped
        fm = re.search(r"\\frac\{(\d+)\}", ref)
        if fm is not None:
            perturbed["numerator+1"] = (
                ref[: fm.start(1)] + str(int(fm.group(1)) + 1) + ref[fm.end(1) :]
            )
        if _NUMBER_RE.fullmatch(ref) and re.search(r"[1-9]", ref):
            perturbed["sign"] = ref[1:] if ref.startswith("-") else "-" + ref
        diff += [(p, ref, f"math{i}-{k}") for k, p in perturbed.items()]
    return same, diff


GSM8K_SAME, GSM8K_DIFF = _gsm8k_pairs()
MATH_SAME, MATH_DIFF = _math_pairs()
DATASET_SAME = GSM8K_SAME + MATH_SAME
DATASET_DIFF = GSM8K_DIFF + MATH_DIFF


def test_dataset_pairs_are_plentiful() -> None:
    if not DATASET_SAME:
        pytest.skip(f"dataset folder {DATA_DIR} is absent")
    assert len(DATASET_SAME) >= 100
    assert len(DATASET_DIFF) >= 100


def _by_reference(
    same: list[tuple[str, str, str]], diff: list[tuple[str, str, str]]
) -> list[tuple[str, list[tuple[str, str]], list[tuple[str, str]]]]:
    """Group pairs per reference answer: one test per answer keeps the run fast."""
    groups: dict[str, tuple[str, list[tuple[str, str]], list[tuple[str, str]]]] = {}
    for pairs, is_same in ((same, True), (diff, False)):
        for prediction, reference, pair_id in pairs:
            answer_id, kind = pair_id.split("-", 1)
            _, rewrites, perturbations = groups.setdefault(answer_id, (reference, [], []))
            (rewrites if is_same else perturbations).append((kind, prediction))
    return list(groups.values())


DATASET_GROUPS = _by_reference(DATASET_SAME, DATASET_DIFF)


@pytest.mark.parametrize(
    ("reference", "rewrites", "perturbations"),
    DATASET_GROUPS,
    ids=[f"{i}:{g[0][:30]}" for i, g in enumerate(DATASET_GROUPS)],
)
def test_dataset_answer(
    grader: Grader,
    reference: str,
    rewrites: list[tuple[str, str]],
    perturbations: list[tuple[str, str]],
) -> None:
    """Equivalent rewrites of a real answer match it; perturbed values do not."""
    missed = [(k, p) for k, p in rewrites if not grader.is_equivalent(p, reference)]
    wrongly = [(k, p) for k, p in perturbations if grader.is_equivalent(p, reference)]
    assert not missed, f"rewrites of {reference!r} graded wrong: {missed}"
    assert not wrongly, f"perturbations of {reference!r} graded equivalent: {wrongly}"


def test_fast_path_grades_numbers_without_workers() -> None:
    """Plain numeric answers (all of GSM8K) never start a worker process, and are quick."""
    pairs = [(p, r) for p, r, _ in GSM8K_SAME + GSM8K_DIFF]
    if not pairs:
        pytest.skip(f"dataset folder {DATA_DIR} is absent")
    expected = [True] * len(GSM8K_SAME) + [False] * len(GSM8K_DIFF)
    with Grader() as g:
        start = time.perf_counter()
        got = [g.is_equivalent(p, r) for p, r in pairs]
        elapsed = time.perf_counter() - start
        assert g.num_workers == 0
    assert got == expected
    assert elapsed < 2.0


# --------------------------------------------------------------------------------------------
# Hand-written cases, one block per rule
# --------------------------------------------------------------------------------------------

EQUIVALENT = [
    # fractions vs decimals, \dfrac / \tfrac / \frac
    ("\\frac{1}{2}", "0.5"),
    ("0.5", "\\frac{1}{2}"),
    ("\\dfrac{3}{4}", "0.75"),
    ("\\tfrac{3}{4}", "\\frac34"),
    ("\\frac 59", "\\frac{5}{9}"),
    ("\\frac{270}7", "\\frac{270}{7}"),
    ("-\\frac{1}{4}", "-0.25"),
    ("\\frac{-1}{4}", "-.25"),
    ("1/3", "\\frac{1}{3}"),
    ("0.3333333", "\\frac{1}{3}"),
    ("\\dfrac{33}{100}", "0.33"),
    # \left( / \right)
    ("\\left(1,2\\right)", "(1, 2)"),
    ("\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]", "[\\pi^2/8, 5\\pi^2/4]"),
    ("\\left(\\frac{3}{5},\\frac{8}{3}\\right]", "(0.6, \\frac{8}{3}]"),
    # tuples and intervals
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("(6,31,-1)", "(6, 31, -1)"),
    ("[0,1)", "[0, 1)"),
    ("(-\\infty, 0]", "(-\\infty,0]"),
    ("(2,12) \\cup (12,102)", "(12,102)\\cup(2,12)"),
    # percentages: 50\% == 50 (MATH convention) and == 0.5 (the percent side may be a fraction)
    ("50\\%", "50"),
    ("50", "50\\%"),
    ("50\\%", "0.5"),
    ("12.5%", "12.5"),
    ("25 \\text{ percent}", "0.25"),
    # units
    ("5 \\text{ cm}", "5"),
    ("\\$5", "5"),
    ("5 dollars", "5"),
    ("90^\\circ", "90"),
    ("90^{\\circ}", "90"),
    ("90 degrees", "90"),
    ("864 \\mbox{ inches}^2", "864"),
    ("15\\mbox{ cm}^2", "15"),
    ("\\$18.90", "18.9"),
    ("5.4 \\text{ cents}", "5.4"),
    ("\\frac{270}7\\text{ degrees}", "\\frac{270}{7}"),
    # x = 3 vs 3
    ("x = 3", "3"),
    ("3", "x=3"),
    ("k = -\\frac{1}{2}", "-0.5"),
    ("x \\in [-2,7]", "[-2,7]"),
    ("y = 2x + 3", "2x+3"),
    # thousands separators
    ("1,000", "1000"),
    ("1000", "1,000"),
    ("10,\\!080", "10080"),
    ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
    ("\\$32,\\!348", "32348"),
    ("1,234,567.5", "1234567.5"),
    # \text{}, \mbox{}, \!, \,
    ("\\text{Evelyn}", "Evelyn"),
    ("\\text{east}", "East"),
    ("\\mbox{even}", "even"),
    ("10\\,000", "10000"),
    ("\\!5", "5"),
    # \boxed{} wrappers, trailing periods
    ("\\boxed{42}", "42"),
    ("The answer is $\\boxed{42}$.", "42"),
    ("\\fbox{7}", "7"),
    ("\\boxed 5", "5"),
    ("7.", "7"),
    ("\\boxed{\\frac{1}{2}}.", "0.5"),
    # \pi and sqrt expressions
    ("2\\pi", "6.283185307179586"),
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("288 \\pi", "288\\pi"),
    ("3\\sqrt{13}", "\\sqrt{117}"),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}"),
    ("\\sqrt2", "\\sqrt{2}"),
    ("11\\sqrt2", "11 \\sqrt{2}"),
    ("\\sqrt[3]{8}", "2"),
    ("18+2\\pi", "2\\pi + 18"),
    # multiple choice letters
    ("(A)", "A"),
    ("\\text{(C)}", "C"),
    ("C", "\\textbf{(C)}"),
    # mixed numbers, complex numbers, lists, sets, matrices, powers
    ("1\\frac{4}{5}", "\\frac{9}{5}"),
    ("137 \\frac{1}{2}", "137.5"),
    ("6 - 5i", "-5i + 6"),
    ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}"),
    ("1,-2", "-2, 1"),
    ("3, 5, 7", "7,5,3"),
    ("\\{1\\pm\\sqrt{5},-2\\}", "\\{-2,1-\\sqrt{5},1+\\sqrt{5}\\}"),
    (
        "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
        "\\begin{pmatrix} -\\frac13 \\\\ \\frac23 \\\\ \\frac53 \\end{pmatrix}",
    ),
    ("2^{10}", "1024"),
    ("6.72\\times10^{-5}", ".0000672"),
    ("5!", "120"),
    # symbolic: the math-verify / sympy path in the worker
    ("p - q", "-q + p"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\cot x", "\\frac{\\cos x}{\\sin x}"),
    ("2(k+1)", "2k+2"),
]

NOT_EQUIVALENT = [
    ("\\frac{1}{2}", "0.51"),
    ("\\frac{1}{3}", "0.33"),
    ("\\frac{2}{3}", "\\frac{3}{2}"),
    # an interval never equals a tuple/interval with other brackets; order matters in tuples
    ("[0,1)", "(0,1)"),
    ("(0,1]", "(0,1)"),
    ("(1,2)", "[1,2]"),
    ("[1,2]", "(1,2)"),
    ("(1,2)", "(2,1)"),
    ("(1,2)", "(1,2,3)"),
    ("(1,2)", "3"),
    ("(1,2)", "\\{1,2\\}"),
    # percent: a bare 50 is not 0.5
    ("50", "0.5"),
    ("0.5", "50"),
    # units / assignments do not hide wrong numbers
    ("5 \\text{ cm}", "6"),
    ("x = 3", "4"),
    ("3R^2", "3"),
    # thousands separators: the number, not a tuple, and not a neighbour
    ("1,000", "1001"),
    ("(1,000)", "1000"),
    # integers compare exactly even where a relative tolerance of 1e-6 would not see it
    ("1000000", "1000001"),
    ("11,\\! 111,\\! 111,\\! 100", "11111111101"),
    # words and letters
    ("A", "B"),
    ("(A)", "(B)"),
    ("\\text{east}", "west"),
    ("5", "\\text{five}"),
    # numeric tolerance
    ("2\\pi", "6.28"),
    ("\\sqrt{2}", "1.41"),
    ("3\\sqrt{13}", "3\\sqrt{14}"),
    # lists and \pm need every member
    ("1,-2", "1,2"),
    ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}"),
    ("1, 2", "1, 2, 3"),
    # sign flips
    ("-5", "5"),
    ("6+5i", "6-5i"),
    # symbolic
    ("p - q", "q - p"),
    ("x^2+2x+1", "(x+1)^3"),
    # empty answers never match
    ("", "5"),
    ("", ""),
    ("\\boxed{}", "\\boxed{}"),
]


@pytest.mark.parametrize(("prediction", "reference"), EQUIVALENT)
def test_equivalent(grader: Grader, prediction: str, reference: str) -> None:
    assert grader.is_equivalent(prediction, reference)


@pytest.mark.parametrize(("prediction", "reference"), NOT_EQUIVALENT)
def test_not_equivalent(grader: Grader, prediction: str, reference: str) -> None:
    assert not grader.is_equivalent(prediction, reference)


def test_module_level_is_equivalent() -> None:
    assert is_equivalent("\\dfrac{1}{2}", "0.5")
    assert not is_equivalent("\\dfrac{1}{2}", "0.6")
    assert is_equivalent("p - q", "-q + p")
    assert get_default_grader() is get_default_grader()


def test_numbers_are_accepted_as_answers(grader: Grader) -> None:
    assert grader.is_equivalent(18, "18")
    assert grader.is_equivalent("0.5", Fraction(1, 2))
    assert grader.is_equivalent(0.25, "\\frac14")
    assert grader.is_equivalent(Decimal("1.50"), "1.5")
    assert not grader.is_equivalent(19, 18)


def test_relative_tolerance_is_configurable() -> None:
    assert not is_equivalent("3.14", "\\pi")
    assert is_equivalent("3.14", "\\pi", rel_tol=1e-3)
    with Grader(rel_tol=1e-2, symbolic=False) as g:
        assert g.is_equivalent("3.13", "\\pi")
        assert not g.is_equivalent("3.13", "\\pi", rel_tol=1e-6)
    with Grader(rel_tol=0.0, symbolic=False) as g:
        assert not g.is_equivalent("0.3333333", "\\frac13")
        assert g.is_equivalent("0.5", "\\frac12")


def test_symbolic_false_never_starts_workers() -> None:
    with Grader(symbolic=False) as g:
        assert not g.is_equivalent("p - q", "-q + p")  # undecidable in process -> False
        assert g.is_equivalent("\\frac{1}{2}", "0.5")
        assert g.num_workers == 0


# --------------------------------------------------------------------------------------------
# Extraction and normalisation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{5}", "5"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("$\\boxed 5$", "5"),
        ("\\fbox{x+1}", "x+1"),
        ("\\boxed{\\boxed{3}}", "\\boxed{3}"),
        ("\\boxed{7} and a cut-off \\boxed{8", "7"),
        ("\\boxed{ 9 }", " 9 "),
        ("no answer here", None),
        ("\\boxedx{3}", None),
        ("", None),
    ],
)
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


def test_extract_answer() -> None:
    assert extract_answer("We get $\\boxed{ 42 }$.") == "42"
    assert extract_answer("The answer is \\boxed{\\left(3, \\frac{\\pi}{2}\\right)}") == (
        "\\left(3, \\frac{\\pi}{2}\\right)"
    )
    assert extract_answer("The answer is 42.") is None
    assert extract_answer("\\boxed{}") == ""


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("10,\\!080", "10080"),
        ("\\$32,\\!348", "32348"),
        ("\\text{(C)}", "C"),
        ("x = 5", "5"),
        ("90^\\circ", "90"),
        ("5.4 \\text{ cents}", "5.4"),
        ("\\cot x", "\\cot x"),
        ("\\frac 59", "\\frac{5}{9}"),
        ("4210_{5}", "4210_5"),
        ("3R^2", "3R^2"),
        ("The answer is $\\boxed{5}$.", "5"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ],
)
def test_normalize_answer(raw: str, normal: str) -> None:
    assert normalize_answer(raw) == normal


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_type_errors_name_the_argument(grader: Grader) -> None:
    with pytest.raises(TypeError, match="prediction"):
        grader.is_equivalent(None, "1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reference"):
        is_equivalent("1", [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reference"):
        is_equivalent("1", True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text"):
        last_boxed(b"\\boxed{1}")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text"):
        extract_answer(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="s must"):
        normalize_answer(None)  # type: ignore[arg-type]


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        Grader(timeout_s=0)
    with pytest.raises(ValueError, match="rel_tol"):
        Grader(rel_tol=-1)
    with pytest.raises(ValueError, match="max_workers"):
        Grader(max_workers=0)
    with pytest.raises(ValueError, match="timeout_s"):
        is_equivalent("1", "1", timeout_s=-1)


def test_closed_grader_refuses_work() -> None:
    g = Grader()
    with g:
        assert g.is_equivalent("1", "1")
    assert g.closed
    with pytest.raises(RuntimeError, match="closed"):
        g.is_equivalent("1", "1")
    g.close()  # idempotent


# --------------------------------------------------------------------------------------------
# Timeouts, threads, processes
# --------------------------------------------------------------------------------------------


def test_pathological_input_returns_within_timeout(caplog: pytest.LogCaptureFixture) -> None:
    with Grader(timeout_s=1.0) as g:
        g.warmup()
        caplog.set_level(logging.WARNING, logger="rstar_math.grading")
        start = time.monotonic()
        result = g.is_equivalent(POWER_TOWER, "3")
        elapsed = time.monotonic() - start
        assert result is False
        assert elapsed < 1.0 + 1.0
        assert "timed out" in caplog.text
        # The stuck worker was killed and replaced: the grader still works.
        assert g.is_equivalent("p - q", "-q + p")
        # Repeats are answered from the cache instead of timing out again.
        start = time.monotonic()
        assert g.is_equivalent(POWER_TOWER, "3") is False
        assert time.monotonic() - start < 0.5


def test_timeout_in_a_worker_thread() -> None:
    """The hard timeout also holds for calls made from a non-main thread."""
    results: list[tuple[bool, float]] = []
    with Grader(timeout_s=1.0) as g:
        g.warmup()

        def work() -> None:
            start = time.monotonic()
            results.append((g.is_equivalent(POWER_TOWER, "5"), time.monotonic() - start))

        t = threading.Thread(target=work)
        t.start()
        t.join(10)
    assert results and results[0][0] is False
    assert results[0][1] < 2.0


def test_busy_pool_still_honours_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    """With every worker stuck, a queued call gives up at its deadline instead of waiting."""
    caplog.set_level(logging.WARNING, logger="rstar_math.grading")
    with Grader(timeout_s=1.0, max_workers=1) as g:
        g.warmup()
        with ThreadPoolExecutor(max_workers=2) as pool:
            start = time.monotonic()
            futures = [pool.submit(g.is_equivalent, POWER_TOWER, str(k)) for k in (3, 4)]
            results = [f.result() for f in futures]
            elapsed = time.monotonic() - start
    assert results == [False, False]
    assert elapsed < 1.0 + 1.0
    assert "waiting for a free worker" in caplog.text


def test_grading_inside_a_worker_thread() -> None:
    """math-verify's signal-based timeout would raise here; ours must not."""
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["symbolic"] = is_equivalent("x^2 - 1", "(x-1)(x+1)")
            outcome["numeric"] = is_equivalent("\\frac{1}{2}", "0.5")
        except BaseException as exc:  # pragma: no cover - reported below
            outcome["error"] = exc

    t = threading.Thread(target=work)
    t.start()
    t.join(30)
    assert "error" not in outcome, outcome.get("error")
    assert outcome == {"symbolic": True, "numeric": True}


def _concurrency_pairs() -> list[tuple[str, str]]:
    pairs = EQUIVALENT + NOT_EQUIVALENT
    pairs += [(p, r) for p, r, _ in MATH_SAME[:60:3] + MATH_DIFF[:60:3]]
    return pairs


def test_thread_pool_matches_sequential() -> None:
    pairs = _concurrency_pairs()
    with Grader(timeout_s=10.0, max_workers=2, cache_size=0) as g:
        sequential = [g.is_equivalent(p, r) for p, r in pairs]
        with ThreadPoolExecutor(max_workers=8) as pool:
            parallel = list(pool.map(lambda pr: g.is_equivalent(*pr), pairs))
        assert g.num_workers <= 2
    assert parallel == sequential


def test_module_level_from_many_threads() -> None:
    pairs = _concurrency_pairs()
    sequential = [is_equivalent(p, r) for p, r in pairs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        graders = list(pool.map(lambda _: get_default_grader(), range(32)))
        parallel = list(pool.map(lambda pr: is_equivalent(*pr), pairs))
    assert parallel == sequential
    assert all(g is graders[0] for g in graders)


def _grade_in_child(prediction: str, reference: str) -> bool:
    return is_equivalent(prediction, reference)


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_forked_child_gets_its_own_workers() -> None:
    assert is_equivalent("p - q", "-q + p")  # the parent's default grader now has a worker
    parent_pid = os.getpid()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply(_grade_in_child, ("a + b", "b + a")) is True
        assert pool.apply(_grade_in_child, ("a + b", "b - a")) is False
    assert os.getpid() == parent_pid
    assert is_equivalent("p - q", "-q + p")  # the parent's workers survived the child


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

_FAST = Grader(symbolic=False)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_integer_formats(n: int) -> None:
    assert _FAST.is_equivalent(f"{n:,}", str(n))
    assert _FAST.is_equivalent(f"\\boxed{{{n}}}", f"x = {n}")
    assert not _FAST.is_equivalent(str(n + 1), str(n))
    if n != 0:
        assert not _FAST.is_equivalent(str(-n), str(n))


@settings(max_examples=100, deadline=None)
@given(st.fractions(max_denominator=10**6).filter(lambda f: f.denominator > 1))
def test_fraction_formats(f: Fraction) -> None:
    num, den = f.numerator, f.denominator
    latex = f"\\frac{{{num}}}{{{den}}}" if num >= 0 else f"-\\frac{{{-num}}}{{{den}}}"
    assert _FAST.is_equivalent(latex, f"{num}/{den}")
    assert _FAST.is_equivalent(latex.replace("\\frac", "\\dfrac"), float(f))
    assert not _FAST.is_equivalent(latex, f"{num + 1}/{den}")
