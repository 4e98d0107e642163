"""A synthetic domain of multi-step word problems with a teacher that writes code-augmented CoT.

This is the training ground of the built-in miniature model (issue 7): a seeded generator of word
problems whose difficulty lies in *translating text into the right code steps in the right
order*, never in arithmetic (all arithmetic happens in the Python the solution runs). Each problem
carries its reference answer and a reference solution in the paper's format, written by a
deterministic "teacher" that plays the role of the paper's bootstrap model::

    >>> from rstar_math.data.synthetic import generate_problems
    >>> p = generate_problems(1, "level2", seed=5)[0]
    >>> print(p.question)  # doctest: +NORMALIZE_WHITESPACE
    Cal bought exactly 18 books. Compared with Cal, Yara bought 4 fewer books. The number of
    books Xavi bought is 14 more than the number Yara bought. What is the number of books Xavi
    bought?
    >>> print(p.solution)  # doctest: +ELLIPSIS
    <code>
    # Step 1: Cal bought 18 books
    cal_books = 18
    <end_of_step>
    <BLANKLINE>
    # Step 2: Yara bought 4 fewer books than Cal
    yara_books = cal_books - 4
    <end_of_step>
    ...
    <output>28<end_of_output>
    <answer>The answer is \\boxed{28}.<end_of_answer>

A problem is a small graph of quantities (``ann_marbles``, ``ben_hours``, ...), each stated by one
sentence (a *fact*) in terms of constants and other quantities; the question asks for one quantity
or for a combination (total, difference, equal share). The teacher writes one step per fact the
answer needs (one *hop*), in dependency order, skipping distractor facts, and mirrors each
sentence in code: a sentence that states a known quantity in terms of an unknown one through a
multiplication ("Ann has 5 more than three times as many marbles as Ben", Ann known) becomes a
small equation solved with sympy. ``teacher_solution(problem, plan=True)`` writes the same steps
after a first step that plans backwards from what is asked (one dependency per comment line),
in the order that plan implies. ``teacher_solution(problem, equations=True)`` instead writes each
needed sentence, in the question's order, as a sympy equation that says what the sentence says,
and solves the system in the final step: no step waits for a quantity a later step computes.

Families (:data:`FAMILIES`): ``chain`` (multi-entity comparison chains: "3 fewer than twice as
many as", "half as many", sums), ``rate`` (per-hour pay, speed, price, reading pace, packing),
``ratio`` (ratios and equal sharing, integral by construction) and ``equation`` (linear equations
and inverse relations solved with sympy). Levels (:data:`LEVELS`) set the number of hops, the
number of distractor facts, how often facts are out of dependency order and how often the harder
relations appear; the ``hard`` level always uses more hops than any training level.
"""

from __future__ import annotations

import io
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rstar_math.training.records import SFTRecord

__all__ = [
    "FAMILIES",
    "HARD_LEVEL",
    "LEVELS",
    "NAMES",
    "OBJECTS",
    "TRAIN_LEVELS",
    "LevelSpec",
    "SyntheticProblem",
    "corpus",
    "generate_problems",
    "make_splits",
    "run_program",
    "same_statement",
    "stated_equations",
    "teacher_solution",
    "to_sft_records",
]

# --------------------------------------------------------------------------- levels


@dataclass(frozen=True)
class LevelSpec:
    """How hard one level's problems are.

    ``hops``: inclusive range of reasoning steps (code steps before the final print);
    ``distractors``: inclusive range of facts the answer does not need; ``order``: weights of
    presenting the facts in dependency order, reversed, or shuffled; ``complex_weight``: a factor
    on the weight of the harder relations (affine, inverse/sympy, ratio, totals); ``sum_prob``:
    probability that a step of three or more combines two sub-chains ("as many as A and B
    combined").
    """

    name: str
    hops: tuple[int, int]
    distractors: tuple[int, int]
    order: tuple[float, float, float] = (1.0, 0.0, 0.0)
    complex_weight: float = 1.0
    sum_prob: float = 0.2

    def __post_init__(self) -> None:
        if not 1 <= self.hops[0] <= self.hops[1]:
            raise ValueError(f"LevelSpec.hops must be 1 <= lo <= hi, got {self.hops}")
        if not 0 <= self.distractors[0] <= self.distractors[1]:
            raise ValueError(f"LevelSpec.distractors must be 0 <= lo <= hi, got {self.distractors}")


LEVELS: dict[str, LevelSpec] = {
    "level1": LevelSpec("level1", (1, 2), (0, 1), (0.8, 0.1, 0.1), 0.6, 0.0),
    "level2": LevelSpec("level2", (3, 3), (0, 2), (0.5, 0.25, 0.25), 1.0, 0.2),
    "level3": LevelSpec("level3", (4, 5), (1, 4), (0.35, 0.25, 0.4), 1.2, 0.25),
    "hard": LevelSpec("hard", (8, 9), (1, 3), (0.3, 0.3, 0.4), 1.2, 0.25),
}
TRAIN_LEVELS: tuple[str, ...] = ("level1", "level2", "level3")
HARD_LEVEL = "hard"
FAMILIES: tuple[str, ...] = ("chain", "rate", "ratio", "equation")
#: The fewest hops a family's problem can have (a chain needs a given and a relation).
_MIN_HOPS = {"chain": 2, "rate": 1, "ratio": 2, "equation": 1}

# --------------------------------------------------------------------------- vocabulary

_F, _M = "f", "m"
NAMES: tuple[tuple[str, str], ...] = (
    ("Ann", _F), ("Ben", _M), ("Cal", _M), ("Dana", _F), ("Eli", _M), ("Fay", _F), ("Gus", _M),
    ("Hana", _F), ("Ivan", _M), ("Jill", _F), ("Kai", _M), ("Lena", _F), ("Max", _M),
    ("Nina", _F), ("Omar", _M), ("Pia", _F), ("Quinn", _M), ("Rosa", _F), ("Sam", _M),
    ("Tara", _F), ("Uma", _F), ("Vic", _M), ("Wendy", _F), ("Xavi", _M), ("Yara", _F),
    ("Zack", _M), ("Amir", _M), ("Bella", _F), ("Carlos", _M), ("Dina", _F), ("Emma", _F),
    ("Finn", _M), ("Gina", _F), ("Hugo", _M), ("Iris", _F), ("Jack", _M), ("Kira", _F),
    ("Leo", _M), ("Mia", _F), ("Noah", _M), ("Olga", _F), ("Pedro", _M), ("Ruth", _F),
    ("Seth", _M), ("Tess", _F), ("Ugo", _M), ("Vera", _F), ("Will", _M), ("Zoe", _F),
    ("Liam", _M),
)  # fmt: skip
#: Countable objects as (plural, singular).
OBJECTS: tuple[tuple[str, str], ...] = (
    ("apples", "apple"), ("marbles", "marble"), ("stickers", "sticker"), ("books", "book"),
    ("pencils", "pencil"), ("cards", "card"), ("stamps", "stamp"), ("shells", "shell"),
    ("coins", "coin"), ("cookies", "cookie"), ("balloons", "balloon"), ("crayons", "crayon"),
    ("buttons", "button"), ("beads", "bead"), ("toy cars", "toy car"), ("candies", "candy"),
    ("oranges", "orange"), ("pens", "pen"), ("erasers", "eraser"), ("rocks", "rock"),
    ("feathers", "feather"), ("ribbons", "ribbon"), ("puzzles", "puzzle"), ("comics", "comic"),
    ("dolls", "doll"), ("kites", "kite"), ("blocks", "block"), ("bottle caps", "bottle cap"),
    ("postcards", "postcard"), ("seeds", "seed"), ("cupcakes", "cupcake"), ("muffins", "muffin"),
    ("bananas", "banana"), ("lemons", "lemon"), ("peaches", "peach"), ("notebooks", "notebook"),
    ("badges", "badge"), ("tickets", "ticket"), ("flowers", "flower"), ("magnets", "magnet"),
)  # fmt: skip
#: Verbs for owning/getting objects: (3rd person, base, question auxiliary, plural, possessive).
_COUNT_VERBS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("has", "have", "does", "have", True),
    ("has", "have", "does", "have", True),
    ("owns", "own", "does", "own", True),
    ("keeps", "keep", "does", "keep", True),
    ("collected", "collect", "did", "collected", False),
    ("found", "find", "did", "found", False),
    ("bought", "buy", "did", "bought", False),
)


@dataclass(frozen=True)
class _Measure:
    """What is counted: the noun, the verb that states it, the variable suffix."""

    key: str  # variable suffix: ann_<key>
    noun: str  # plural noun: "marbles", "hours"
    sg: str  # singular noun
    verb: str = "has"  # 3rd person: "Ann has 7 marbles"
    base: str = "have"  # "How many marbles does Ann have?"
    aux: str = "does"
    plural: str = "have"  # "Ann and Ben have 20 marbles"
    possessive: bool = True  # an owned stock that can be shared out
    style: str = "verb"  # "verb": "Ann has 7 marbles"; "is": "Ann's number is 7"


_NUMBER = _Measure("number", "number", "number", style="is", possessive=False)


@dataclass(frozen=True)
class _Theme:
    """Two measures linked by a rate: ``to = rate * from`` ("7 dollars per hour")."""

    name: str
    src: _Measure
    dst: _Measure
    rate: tuple[str, ...]  # "{S} earns {r} dollars per hour."
    const: tuple[str, ...]  # "{S} works {t} hours at {r} dollars an hour."


def _fill(template: str, *words: str) -> str:
    """Put fixed words into a template's ``<0>``, ``<1>`` slots (its ``{...}`` slots stay)."""
    for i, word in enumerate(words):
        template = template.replace(f"<{i}>", word)
    return template


def _object_measure(rng: random.Random, exclude: Iterable[str] = ()) -> _Measure:
    plural, sg = rng.choice([o for o in OBJECTS if o[0] not in set(exclude)])
    verb, base, aux, plural_verb, poss = rng.choice(_COUNT_VERBS)
    return _Measure(plural.replace(" ", "_"), plural, sg, verb, base, aux, plural_verb, poss)


def _theme(rng: random.Random) -> _Theme:
    kind = rng.choice(("work", "travel", "reading", "shopping", "packing"))
    if kind == "work":
        return _Theme(
            kind,
            _Measure("hours", "hours", "hour", "works", "work", "does", "work", False),
            _Measure("dollars", "dollars", "dollar", "earns", "earn", "does", "earn", False),
            (
                "{S} earns {r} dollars per hour.",
                "{S} is paid {r} dollars for every hour {pron} works.",
                "{S} makes {r} dollars an hour.",
            ),
            (
                "{S} works {t} hours and earns {r} dollars per hour.",
                "{S} earns {r} dollars per hour for {t} hours.",
                "{S} works {t} hours at {r} dollars an hour.",
            ),
        )
    if kind == "travel":
        unit = rng.choice(("km", "miles"))
        sg = "km" if unit == "km" else "mile"
        return _Theme(
            kind,
            _Measure("hours", "hours", "hour", "drives", "drive", "does", "drive", False),
            _Measure(unit, unit, sg, "travels", "travel", "does", "travel", False),
            (
                _fill("{S} drives at {r} <0> per hour.", unit),
                _fill("{S}'s speed is {r} <0> per hour.", unit),
                _fill("{S} covers {r} <0> every hour.", unit),
            ),
            (
                _fill("{S} drives for {t} hours at {r} <0> per hour.", unit),
                _fill("{S} travels at {r} <0> per hour for {t} hours.", unit),
                _fill("{S} drives {t} hours at a speed of {r} <0> per hour.", unit),
            ),
        )
    if kind == "reading":
        return _Theme(
            kind,
            _Measure("days", "days", "day", "reads for", "read for", "does", "read for", False),
            _Measure("pages", "pages", "page", "reads", "read", "does", "read", False),
            (
                "{S} reads {r} pages per day.",
                "{S} reads {r} pages every day.",
                "{S} gets through {r} pages a day.",
            ),
            (
                "{S} reads {r} pages a day for {t} days.",
                "{S} reads for {t} days, {r} pages each day.",
                "For {t} days, {S} reads {r} pages per day.",
            ),
        )
    plural, sg = rng.choice(OBJECTS)
    key = plural.replace(" ", "_")
    if kind == "shopping":
        return _Theme(
            kind,
            _Measure(key, plural, sg, "buys", "buy", "does", "buy", False),
            _Measure("dollars", "dollars", "dollar", "spends", "spend", "does", "spend", False),
            (
                _fill("{S} pays {r} dollars for each <0>.", sg),
                _fill("Each <0> that {S} buys costs {r} dollars.", sg),
                _fill("{S} buys <0> at {r} dollars each.", plural),
            ),
            (
                _fill("{S} buys {t} <0> at {r} dollars each.", plural),
                _fill("{S} buys {t} <0> that cost {r} dollars each.", plural),
                _fill("{S} pays {r} dollars for each of the {t} <0> {pron} buys.", plural),
            ),
        )
    box, box_sg = rng.choice((("boxes", "box"), ("bags", "bag"), ("baskets", "basket")))
    return _Theme(
        kind,
        _Measure(box, box, box_sg, "fills", "fill", "does", "fill", False),
        _Measure(key, plural, sg, "packs", "pack", "does", "pack", False),
        (
            _fill("{S} puts {r} <0> in each <1>.", plural, box_sg),
            _fill("Each of {S}'s <0> holds {r} <1>.", box, plural),
            _fill("{S} packs {r} <0> into every <1>.", plural, box_sg),
        ),
        (
            _fill("{S} fills {t} <0> with {r} <1> each.", box, plural),
            _fill("{S} packs {r} <0> into each of {t} <1>.", plural, box),
            _fill("{S} has {t} <0>, and puts {r} <1> in each.", box, plural),
        ),
    )


# --------------------------------------------------------------------------- sentence templates
# Placeholders: {S} subject, {O} object (and {O2}), {N} noun, {V} verb, {Vb} base verb, {Vpl}
# plural verb, {aux}, {k} factor, {kw}/{Kw} factor word ("twice"), {fw} fraction word ("half"),
# {d} difference, {n} number, {p}:{q} ratio, {pos}/{pron} possessive/pronoun of the subject.
# A relation sentence states S = f(O); which side is unknown is decided by the builder.

_VERB_T: dict[str, tuple[str, ...]] = {
    "given": (
        "{S} {V} {n} {N}.",
        "{S} {V} exactly {n} {N}.",
        "The number of {N} {S} {V} is {n}.",
    ),
    "times": (
        "{S} {V} {kw} as many {N} as {O}.",
        "The number of {N} {S} {V} is {kw} the number {O} {V}.",
        "{S}'s {N} are {kw} {O}'s.",
        "Compared with {O}, {S} {V} {kw} as many {N}.",
    ),
    "frac": (
        "{S} {V} {fw} as many {N} as {O}.",
        "The number of {N} {S} {V} is {fw} the number {O} {V}.",
        "{S}'s {N} are {fw} of {O}'s.",
    ),
    "plus": (
        "{S} {V} {d} more {N} than {O}.",
        "{S} {V} {d} {N} more than {O}.",
        "The number of {N} {S} {V} is {d} more than the number {O} {V}.",
        "Compared with {O}, {S} {V} {d} more {N}.",
    ),
    "minus": (
        "{S} {V} {d} fewer {N} than {O}.",
        "{S} {V} {d} {N} fewer than {O}.",
        "The number of {N} {S} {V} is {d} less than the number {O} {V}.",
        "Compared with {O}, {S} {V} {d} fewer {N}.",
    ),
    "affine_plus": (
        "{S} {V} {d} more than {kw} as many {N} as {O}.",
        "{Kw} {O}'s {N}, plus {d}, is how many {N} {S} {V}.",
        "The number of {N} {S} {V} is {d} more than {kw} the number {O} {V}.",
        "If you multiply {O}'s {N} by {k} and add {d}, you get {S}'s {N}.",
    ),
    "affine_minus": (
        "{S} {V} {d} fewer than {kw} as many {N} as {O}.",
        "{Kw} {O}'s {N}, minus {d}, is how many {N} {S} {V}.",
        "The number of {N} {S} {V} is {d} less than {kw} the number {O} {V}.",
        "If you multiply {O}'s {N} by {k} and subtract {d}, you get {S}'s {N}.",
    ),
    "ratio": (
        "The ratio of {S}'s {N} to {O}'s {N} is {p} to {q}.",
        "For every {p} {N} {S} {V}, {O} {V} {q}.",
        "{S}'s and {O}'s {N} are in the ratio {p}:{q}.",
    ),
    "share": (
        "{O} shares {opos} {N} equally among {k} friends, and {S} is one of them.",
        "{O} splits {opos} {N} into {k} equal groups and gives one group to {S}.",
        "{S} receives one of {k} equal shares of {O}'s {N}.",
    ),
    "sum": (
        "{S} {V} as many {N} as {O} and {O2} combined.",
        "The number of {N} {S} {V} equals the number {O} and {O2} {Vpl} together.",
        "{S}'s {N} are {O}'s and {O2}'s put together.",
    ),
    "total": (
        "Together, {S} and {O} {Vpl} {n} {N}.",
        "{S} and {O} {Vpl} {n} {N} in total.",
        "Between them, {S} and {O} {Vpl} {n} {N}.",
    ),
    "equation_plus": (
        "{Kw} the number of {N} {S} {V}, increased by {d}, is {n}.",
        "If you multiply the number of {N} {S} {V} by {k} and add {d}, you get {n}.",
        "{d} more than {kw} the number of {N} {S} {V} is {n}.",
        "When {S}'s {N} are multiplied by {k} and {d} more are added, the total is {n}.",
    ),
    "equation_minus": (
        "{Kw} the number of {N} {S} {V}, decreased by {d}, is {n}.",
        "If you multiply the number of {N} {S} {V} by {k} and subtract {d}, you get {n}.",
        "{d} less than {kw} the number of {N} {S} {V} is {n}.",
        "When {S}'s {N} are multiplied by {k} and {d} are taken away, {n} are left.",
    ),
}
#: Relation sentences that leave the noun out ("Ann has 5 more than Ben."), used only in
#: problems with a single countable noun.
_ELIDED_T: dict[str, tuple[str, ...]] = {
    "times": ("{S} {V} {kw} as many as {O}.",),
    "frac": ("{S} {V} {fw} as many as {O}.",),
    "plus": ("{S} {V} {d} more than {O}.",),
    "minus": ("{S} {V} {d} fewer than {O}.",),
    "affine_plus": ("{S} {V} {d} more than {kw} as many as {O}.",),
    "affine_minus": ("{S} {V} {d} fewer than {kw} as many as {O}.",),
}
_IS_T: dict[str, tuple[str, ...]] = {
    "given": ("{S}'s {N} is {n}.", "{S} picks the {N} {n}.", "{S} is thinking of the {N} {n}."),
    "times": (
        "{S}'s {N} is {kw} {O}'s {N}.",
        "{S}'s {N} is {kw} as large as {O}'s.",
        "Multiplying {O}'s {N} by {k} gives {S}'s {N}.",
    ),
    "frac": ("{S}'s {N} is {fw} of {O}'s {N}.", "Dividing {O}'s {N} by {k} gives {S}'s {N}."),
    "plus": (
        "{S}'s {N} is {d} more than {O}'s {N}.",
        "{S}'s {N} is {d} greater than {O}'s.",
        "Adding {d} to {O}'s {N} gives {S}'s {N}.",
    ),
    "minus": (
        "{S}'s {N} is {d} less than {O}'s {N}.",
        "{S}'s {N} is {d} smaller than {O}'s.",
        "Subtracting {d} from {O}'s {N} gives {S}'s {N}.",
    ),
    "affine_plus": (
        "{S}'s {N} is {d} more than {kw} {O}'s {N}.",
        "Multiplying {O}'s {N} by {k} and adding {d} gives {S}'s {N}.",
        "{S}'s {N} equals {O}'s {N} times {k}, plus {d}.",
    ),
    "affine_minus": (
        "{S}'s {N} is {d} less than {kw} {O}'s {N}.",
        "Multiplying {O}'s {N} by {k} and subtracting {d} gives {S}'s {N}.",
        "{S}'s {N} equals {O}'s {N} times {k}, minus {d}.",
    ),
    "ratio": (
        "{S}'s and {O}'s {N}s are in the ratio {p}:{q}.",
        "The ratio of {S}'s {N} to {O}'s {N} is {p} to {q}.",
    ),
    "sum": (
        "{S}'s {N} is the sum of {O}'s and {O2}'s {N}s.",
        "Adding {O}'s and {O2}'s {N}s gives {S}'s {N}.",
    ),
    "total": ("{S}'s and {O}'s {N}s add up to {n}.", "The sum of {S}'s {N} and {O}'s {N} is {n}."),
    "equation_plus": (
        "{Kw} {S}'s {N}, increased by {d}, is {n}.",
        "If {S}'s {N} is multiplied by {k} and {d} is added, the result is {n}.",
        "{S} thinks of a {N}. {Kw} it, plus {d}, equals {n}.",
        "{d} more than {kw} {S}'s {N} is {n}.",
        "{S}'s {N}, {kverb} and increased by {d}, is {n}.",
    ),
    "equation_minus": (
        "{Kw} {S}'s {N}, decreased by {d}, is {n}.",
        "If {S}'s {N} is multiplied by {k} and {d} is subtracted, the result is {n}.",
        "{S} thinks of a {N}. {Kw} it, minus {d}, equals {n}.",
        "{d} less than {kw} {S}'s {N} is {n}.",
        "{S}'s {N}, {kverb} and decreased by {d}, is {n}.",
    ),
}
_ANON_EQ_T: dict[str, tuple[str, ...]] = {
    "equation_plus": (
        "A number {kverb} and increased by {d} is {n}.",
        "{Kw} a number, plus {d}, equals {n}.",
        "When a number is multiplied by {k} and {d} is added, the result is {n}.",
        "{d} more than {kw} a number is {n}.",
        "I think of a number, multiply it by {k} and add {d}. The result is {n}.",
    ),
    "equation_minus": (
        "A number {kverb} and decreased by {d} is {n}.",
        "{Kw} a number, minus {d}, equals {n}.",
        "When a number is multiplied by {k} and {d} is subtracted, the result is {n}.",
        "{d} less than {kw} a number is {n}.",
        "I think of a number, multiply it by {k} and subtract {d}. The result is {n}.",
    ),
}
_ANON_Q = ("What is the number?", "Find the number.", "What number is it?")
_QUESTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("ask", "verb"): (
        "How many {N} {aux} {S} {Vb}?",
        "What is the number of {N} {S} {V}?",
        "Find the number of {N} {S} {V}.",
        "Determine how many {N} {S} {V}.",
        "Work out how many {N} {S} {V}.",
        "So how many {N} {aux} {S} {Vb}?",
    ),
    ("ask", "is"): ("What is {S}'s {N}?", "Find {S}'s {N}.", "Determine {S}'s {N}."),
    ("total", "verb"): (
        "How many {N} {auxpl} {S} and {O} {Vb} together?",
        "What is the total number of {N} {S} and {O} {Vpl}?",
        "Find how many {N} {S} and {O} {Vpl} altogether.",
    ),
    ("total", "is"): (
        "What is the sum of {S}'s and {O}'s {N}s?",
        "Find the sum of {S}'s {N} and {O}'s {N}.",
    ),
    ("diff", "verb"): (
        "How many more {N} {aux} {S} {Vb} than {O}?",
        "What is the difference between the number of {N} {S} {V} and the number {O} {V}?",
        "How many {N} more than {O} {aux} {S} {Vb}?",
    ),
    ("diff", "is"): (
        "How much greater is {S}'s {N} than {O}'s {N}?",
        "By how much does {S}'s {N} exceed {O}'s {N}?",
    ),
    ("share", "verb"): (
        "{S} shares {pos} {N} equally among {k} friends. How many {N} does each friend get?",
        "{S} splits {pos} {N} into {k} equal piles. How many {N} are in each pile?",
        "If {S} divides {pos} {N} equally among {k} bags, how many {N} go in each bag?",
    ),
}
_MISC_T = (
    "{S} is {n} years old.",
    "{S} lives {n} km from the park.",
    "{S}'s class has {n} students.",
    "{S} has been saving for {n} weeks.",
    "The trip to the fair takes {n} minutes.",
    "{S}'s house has {n} windows.",
)
#: The quantity each of :data:`_MISC_T` states, as the every-sentence teacher names it.
_MISC_VARS = (
    "{s}_age",
    "{s}_park_km",
    "{s}_class_students",
    "{s}_saving_weeks",
    "trip_minutes",
    "{s}_windows",
)
_KW = {2: "twice", 3: "three times", 4: "four times", 5: "five times", 6: "six times"}
_KVERB = {2: "doubled", 3: "tripled", 4: "quadrupled", 5: "multiplied by 5", 6: "multiplied by 6"}
_FW = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}

_CAP = 600  # largest intermediate value
_COMPLEX = {"affine", "inv_times", "inv_affine", "inv_frac", "ratio", "total", "inv_rate"}
#: Relation weights per family (unary steps); bases separately.
_WEIGHTS: dict[str, dict[str, float]] = {
    "chain": {
        "times": 3, "frac": 1, "plus": 3, "minus": 3, "affine": 3, "total": 1,
        "inv_times": 0.4, "inv_affine": 0.4, "ratio": 0.3,
    },
    "rate": {
        "rate": 5, "inv_rate": 1.5, "times": 1.5, "plus": 2, "minus": 2, "affine": 1,
        "frac": 0.5, "total": 0.7,
    },
    "ratio": {
        "ratio": 4, "share": 2, "frac": 3, "times": 1, "plus": 1, "minus": 1, "total": 2,
        "affine": 0.5,
    },
    "equation": {
        "inv_affine": 3, "inv_times": 2, "inv_frac": 1, "affine": 2, "plus": 1, "minus": 1,
        "times": 1, "total": 0.5,
    },
}  # fmt: skip
_SIGNATURE = {
    "chain": {"times", "frac", "plus", "minus", "affine", "sum"},
    "rate": {"rate", "inv_rate", "rate_const"},
    "ratio": {"ratio", "share", "frac", "share_root"},
    "equation": {"inv_times", "inv_affine", "inv_frac", "equation"},
}


# --------------------------------------------------------------------------- the problem


@dataclass
class SyntheticProblem:
    """One generated word problem with its reference answer and teacher solution.

    ``hops`` is the number of reasoning steps of the teacher solution (code steps before the
    final print). ``steps`` holds the teacher's ``(comment, code)`` pairs so that
    :func:`teacher_solution` can re-render them (e.g. without step numbers); ``meta`` records
    the template ids, the number of distractors and the order the facts were presented in.
    """

    question: str
    answer: str
    solution: str
    level: str
    family: str
    hops: int
    steps: tuple[tuple[str, str], ...] = ()
    target: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = [list(s) for s in self.steps]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntheticProblem:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["steps"] = tuple(tuple(s) for s in known.get("steps", ()))
        return cls(**known)

    def to_sft_record(self) -> SFTRecord:
        from rstar_math.training.records import SFTRecord

        meta = {"level": self.level, "family": self.family, "hops": self.hops}
        meta["answer"] = self.answer
        return SFTRecord(self.question, self.solution, meta)


def teacher_solution(
    problem: SyntheticProblem,
    numbered: bool = True,
    plan: bool = False,
    quote: bool = False,
    equations: bool = False,
    every_sentence: bool = False,
) -> str:
    """The teacher's code-augmented CoT solution of ``problem``.

    ``numbered=False`` writes ``# <reasoning>`` instead of ``# Step k: <reasoning>`` (step
    numbers beyond the training range are unseen tokens for a tiny model on longer problems).

    ``plan=True`` starts the solution with a planning step that works backwards from what is
    asked, one dependency per comment line (``# finn_stamps needs iris_stamps``), and then
    computes the quantities in the reverse of the plan's order. Without it, the very first step
    must name the quantity at the far end of the dependency chain, a decision that takes all
    of the chain's hops at once; with it, every line the model writes takes one hop (find the
    sentence that defines a quantity, or the plan line above the last one computed).

    ``quote=True`` writes, as each step's comment, the question's sentence the step reads, word
    for word (the question itself for a final step such as a total), instead of the teacher's
    paraphrase. Copying a sentence is what a small transformer does well; the paraphrase asks
    it to restate a fact read from far back in the context, where it binds numbers and people
    wrongly. With the sentence just above it, writing the step's code is a local translation.

    ``equations=True`` writes one step per needed fact *in the order the question states them*,
    each an equation in sympy symbols that says what its sentence says, and a final step that
    solves the system (:func:`_equation_steps`). Nothing has to be computed before it is used,
    so the step order needs no look-ahead, and a sentence that states a known quantity in terms
    of an unknown one is written as it reads. Every step is then a translation of one sentence;
    combine it with ``quote=True`` to put that sentence just above its code.

    ``every_sentence=True`` goes one step further: one step per sentence of the question, in
    order, *distractors included*, each quoting its sentence and appending the equation it
    states as a string (``eqs.append('ben_books = cal_books - 4')``); the final step solves
    them all with sympy and prints what is asked. No step decides whether a fact is needed or
    which fact comes next, and the solution ends where the question does: each step's choice
    is local (the sentence after the last one quoted), however long the problem. A distractor's
    equation names quantities nothing asks for, so it cannot change the answer.
    ``plan``, ``quote`` and ``equations`` do not apply to it.
    """
    if not problem.steps:
        return problem.solution
    if every_sentence:
        if plan or equations:
            raise ValueError("every_sentence=True excludes plan=True and equations=True")
        steps, target = _sentence_steps(problem)
        return _render(steps, target, problem.answer, numbered, final=_SOLVE_EVERY)
    if plan and equations:
        raise ValueError("plan=True and equations=True exclude each other: equations need no plan")
    steps = _quoted_steps(problem) if quote else problem.steps
    if equations:
        steps, target = _equation_steps(problem, steps)
        return _render(steps, target, problem.answer, numbered)
    if plan:
        steps = _planned_steps(problem, steps)
    return _render(steps, problem.target, problem.answer, numbered)


def _quoted_steps(problem: SyntheticProblem) -> tuple[tuple[str, str], ...]:
    """The teacher's steps with each comment replaced by the sentence the step reads."""
    sentences = problem.meta.get("step_sentences")
    if sentences is None or len(sentences) != len(problem.steps):
        raise ValueError(
            "this problem carries no step sentences (meta['step_sentences']): it was generated "
            "by an older version of rstar_math.data.synthetic; generate it again to quote it"
        )
    return tuple((sentence, code) for sentence, (_, code) in zip(sentences, problem.steps))


_SYMPY_SETUP = ("from sympy import symbols, Eq, solve", "x = symbols('x')")
_EQUATION_SETUP = ("from sympy import symbols, Eq, solve", "eqs = []")
_SOLVED = re.compile(r"^(\w+) = solve\(Eq\((.+), ([^,]+)\), x\)\[0\]$")
_ASSIGNED = re.compile(r"^(\w+) = (.+)$")
_NAME = re.compile(r"\b[a-z_][a-z0-9_]*\b")


def _equation_of(code: str) -> str:
    """``Eq(...)`` saying what a teacher step's code computes, the way its sentence states it.

    ``yara_books = cal_books - 4`` becomes ``Eq(yara_books, cal_books - 4)``; a step that
    solves ``Eq(4 * x - 1, jack_coins)`` for ``sam_coins`` becomes ``Eq(jack_coins, 4 *
    sam_coins - 1)``, the way a forward step of the same relation reads. Integer division is
    written ``/`` (sympy symbols cannot floor-divide; the generator only divides where the
    result is whole).
    """
    last = code.split("\n")[-1]
    solved = _SOLVED.match(last)
    if solved:
        name, lhs, rhs = solved.groups()
        lhs = re.sub(r"\bx\b", name, lhs)
        # the single quantity first, as a forward step of the same relation writes it: "Finn
        # bought 1 fewer than 5 times as many as Hugo" is Eq(finn, 5 * hugo - 1) whichever of
        # the two is known
        return f"Eq({lhs}, {rhs})" if rhs.isdigit() else f"Eq({rhs}, {lhs})"
    assigned = _ASSIGNED.match(last)
    if assigned is None:  # pragma: no cover - every teacher step assigns one name
        raise ValueError(f"not a teacher step: {code!r}")
    name, rhs = assigned.groups()
    return f"Eq({name}, {rhs.replace(' // ', ' / ')})"


def _fact_equation(fact: _Fact) -> str:
    """The ``Eq(...)`` a needed fact states, in its sentence's direction."""
    return fact.equation or _equation_of(f"{fact.defines} = {fact.code}")


def _plain(equation: str) -> str:
    """``"a = b"`` for ``"Eq(a, b)"`` (an already plain equation is returned as it is)."""
    if not equation.startswith("Eq("):
        return equation
    body, depth = equation[3:-1], 0
    for i, ch in enumerate(body):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            return f"{body[:i].strip()} = {body[i + 1 :].strip()}"
    raise ValueError(f"not an equation: {equation!r}")  # pragma: no cover - generator bug


#: The final step of an every-sentence solution: solve the equations, print what is asked.
_SOLVE_EVERY = (
    "from sympy import solve, sympify",
    "sol = solve([sympify('Eq(' + e.replace('=', ',') + ')') for e in eqs], dict=True)[0]",
)


def _sentence_steps(problem: SyntheticProblem) -> tuple[tuple[tuple[str, str], ...], str]:
    """One step per sentence of the question, in order, and the final print's expression."""
    stated = problem.meta.get("sentence_equations")
    if stated is None:
        raise ValueError(
            "this problem carries no sentence equations (meta['sentence_equations']): it was "
            "generated by an older version of rstar_math.data.synthetic; generate it again to "
            "write every sentence"
        )
    steps = []
    for n, (sentence, equation) in enumerate(stated):
        code = f"eqs.append('{equation}')"
        steps.append((sentence, f"eqs = []\n{code}" if n == 0 else code))
    return tuple(steps), f"sol[sympify('{problem.target}')]"


def _equation_steps(
    problem: SyntheticProblem, teacher_steps: Sequence[tuple[str, str]]
) -> tuple[tuple[tuple[str, str], ...], str]:
    """One equation step per teacher step, in question order, and the final print's expression.

    Each step declares the symbols it names (declaring a symbol again is harmless, and a step
    that declares its own names needs nothing from the steps before it but ``eqs``), then
    appends its equation. The first step also imports sympy and starts ``eqs``.
    """
    sentences = problem.meta.get("step_sentences")
    if sentences is None or len(sentences) != len(teacher_steps):
        raise ValueError(
            "this problem carries no step sentences (meta['step_sentences']): it was generated "
            "by an older version of rstar_math.data.synthetic; generate it again to write it "
            "as equations"
        )
    # a root step (total, difference, equal share) reads the question, which comes last
    where = [problem.question.rfind(s) for s in sentences]
    order = sorted(range(len(teacher_steps)), key=lambda i: where[i])
    steps = []
    stated = problem.meta.get("step_equations")
    for n, i in enumerate(order):
        comment, code = teacher_steps[i]
        equation = stated[i] if stated is not None else _equation_of(code)
        names = list(dict.fromkeys(m for m in _NAME.findall(equation) if m != "Eq"))
        declare = f"{', '.join(names)} = symbols('{' '.join(names)}')"
        lines = [*(_EQUATION_SETUP if n == 0 else ()), declare, f"eqs.append({equation})"]
        steps.append((comment, "\n".join(lines)))
    return tuple(steps), f"solve(eqs, dict=True)[0][{problem.target}]"


def _planned_steps(
    problem: SyntheticProblem, teacher_steps: Sequence[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    """A backward plan step, then ``teacher_steps`` in depth-first post-order of the plan."""
    graph = problem.meta.get("step_deps")
    if graph is None or len(graph) != len(teacher_steps):
        raise ValueError(
            "this problem carries no dependency graph (meta['step_deps']): it was generated by "
            "an older version of rstar_math.data.synthetic; generate it again to plan it"
        )
    index = {var: i for i, (var, _) in enumerate(graph)}
    deps = {var: [d for d in ds if d in index] for var, ds in graph}
    post: list[str] = []

    def visit(var: str) -> None:
        if var in post:
            return
        for d in deps[var]:
            visit(d)
        post.append(var)

    visit(problem.target)
    post += [var for var, _ in graph if var not in post]  # nothing else, by construction
    lines = []
    for var in reversed(post):
        need = deps[var]
        lines.append(f"# {var} needs {' and '.join(need)}" if need else f"# {var} is given")
    steps = [("Plan backwards from what is asked", "\n".join(lines))]
    setup_done = False
    for var in post:
        comment, code = teacher_steps[index[var]]
        body = [ln for ln in code.split("\n") if ln not in _SYMPY_SETUP]
        if "solve(" in code and not setup_done:  # sympy is set up where it is first used
            body = [*_SYMPY_SETUP, *body]
            setup_done = True
        steps.append((comment, "\n".join(body)))
    return tuple(steps)


def _render(
    steps: Sequence[tuple[str, str]],
    target: str,
    answer: str,
    numbered: bool,
    final: Sequence[str] = (),
) -> str:
    parts = []
    for i, (comment, code) in enumerate(steps, 1):
        head = f"# Step {i}: {comment}" if numbered else f"# {comment}"
        parts.append(f"{head}\n{code}\n<end_of_step>")
    last = "\n".join([*final, f"print({target})"])
    parts.append(f"# Now print the final answer\n{last}\n<end_of_code>")
    return (
        "<code>\n"
        + "\n\n".join(parts)
        + f"\n<output>{answer}<end_of_output>\n"
        + f"<answer>The answer is \\boxed{{{answer}}}.<end_of_answer>"
    )


#: One line of an every-sentence step: ``eqs = []`` or ``eqs.append('<equation>')``.
_APPEND = re.compile(r"^eqs\.append\('([^'\n]*)'\)$")


def stated_equations(code: str) -> list[str] | None:
    """The equations an every-sentence step's ``code`` appends, or None if it does more.

    ``"eqs = []\neqs.append('ann_apples = 5')"`` gives ``["ann_apples = 5"]``; a step with
    any other line (a print, an assignment) is not a statement step and gives None.
    """
    out = []
    for line in code.strip().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line == "eqs = []":
            continue
        m = _APPEND.match(line)
        if m is None:
            return None
        out.append(m.group(1))
    return out


def same_statement(a: str, b: str) -> bool:
    """Whether two equations ``"lhs = rhs"`` say the same thing (up to sides and a factor).

    ``"ben = ann + 3"`` and ``"ann + 3 = ben"`` or ``"2 * ben = 2 * ann + 6"`` agree;
    ``"ben = ann - 3"`` does not, nor does anything that does not parse.
    """
    ea, eb = _difference(a), _difference(b)
    if ea is None or eb is None:
        return False
    if ea == 0 or eb == 0:
        return ea == eb
    from sympy import cancel

    ratio = cancel(ea / eb)
    return bool(ratio.is_number) and ratio != 0


#: What an equation may hold before sympy parses it: names, numbers, + - * / and brackets, no
#: calls (sympify evaluates its input; model output must never reach it unchecked).
_EQUATION_TEXT = re.compile(r"^[a-z0-9_ +\-*/().=]*$")
_CALL = re.compile(r"[a-z_]\w*\s*\(")


def _difference(equation: str) -> Any:
    """``lhs - rhs`` of ``"lhs = rhs"`` as a sympy expression (None: not one equation)."""
    if equation.count("=") != 1 or not _EQUATION_TEXT.match(equation):
        return None
    if "__" in equation or "**" in equation or _CALL.search(equation):
        return None
    from sympy import SympifyError, sympify

    lhs, rhs = equation.split("=")
    try:
        return sympify(lhs) - sympify(rhs)
    except (SympifyError, SyntaxError, TypeError, ValueError, AttributeError):
        return None


def run_program(program: str) -> str:
    """Run a trusted program (a teacher's) with ``exec`` and return what it printed, stripped.

    ``print`` is replaced in the program's namespace, so nothing touches ``sys.stdout`` and the
    call is safe in threads. Only for the generator's own programs, never for model output.
    """
    buf = io.StringIO()

    def _print(*args: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
        buf.write(sep.join(str(a) for a in args) + end)

    exec(program, {"__name__": "__synthetic__", "print": _print})
    return buf.getvalue().strip()


# --------------------------------------------------------------------------- the builder


@dataclass(frozen=True)
class _Entity:
    name: str
    gender: str

    @property
    def slug(self) -> str:
        return self.name.lower()

    @property
    def pos(self) -> str:
        return "her" if self.gender == _F else "his"

    @property
    def pron(self) -> str:
        return "she" if self.gender == _F else "he"


@dataclass(frozen=True)
class _Qty:
    entity: _Entity | None
    measure: _Measure

    @property
    def var(self) -> str:
        if self.entity is None:
            return self.measure.key
        return f"{self.entity.slug}_{self.measure.key}"

    @property
    def label(self) -> str:  # "Ann's marbles"
        if self.entity is None:
            return f"the {self.measure.sg}"
        return f"{self.entity.name}'s {self.measure.noun}"


@dataclass
class _Fact:
    sentence: str
    comment: str
    code: str  # the right-hand side, or full lines for sympy steps
    defines: str
    deps: tuple[str, ...]
    kind: str
    template: str
    sympy: bool = False
    #: ``Eq(...)`` in the sentence's own direction, where the code computes the other way round
    #: (the equation teacher's step; empty: the code read as an equation says it)
    equation: str = ""


class _Retry(Exception):
    """The random draw painted itself into a corner: start the problem again."""


class _Builder:
    def __init__(self, rng: random.Random, family: str, spec: LevelSpec, hops: int) -> None:
        self.rng = rng
        self.family = family
        self.spec = spec
        self.hops = hops
        self.facts: list[_Fact] = []
        self.values: dict[str, int] = {}
        self.names = list(NAMES)
        rng.shuffle(self.names)
        self.theme: _Theme | None = None
        self.elide = False
        self.anonymous = False
        if family == "rate":
            self.theme = _theme(rng)
            self.measures = [self.theme.src, self.theme.dst]
        elif family == "equation" and rng.random() < 0.5:
            self.measures = [_NUMBER]
            self.anonymous = hops == 1 and rng.random() < 0.6
        else:
            self.measures = [_object_measure(rng)]
            self.elide = family in ("chain", "ratio") and rng.random() < 0.3
        self.other_measure: _Measure | None = None
        self.qtys: dict[str, _Qty] = {}
        #: quantities a sentence fixes implicitly ("works 6 hours at 7 dollars an hour")
        self.blocked: set[str] = set()
        self.root_template = ""

    # ---- helpers
    def entity(self) -> _Entity:
        if not self.names:
            raise _Retry
        name, gender = self.names.pop()
        return _Entity(name, gender)

    def weight(self, kind: str) -> float:
        w = _WEIGHTS[self.family].get(kind, 0.0)
        return w * self.spec.complex_weight if kind in _COMPLEX else w

    def fmt(self, template: str, s: _Qty | _Entity | None, o: Any = None, **kw: Any) -> str:
        ent = s.entity if isinstance(s, _Qty) else s
        m = s.measure if isinstance(s, _Qty) else self.measures[0]
        k = kw.get("k")
        ctx = {
            "S": ent.name if ent else "",
            "pos": ent.pos if ent else "its",
            "pron": ent.pron if ent else "it",
            "O": o.name if isinstance(o, _Entity) else "",
            "opos": o.pos if isinstance(o, _Entity) else "",
            "N": m.noun,
            "V": m.verb,
            "Vb": m.base,
            "Vpl": m.plural,
            "aux": m.aux,
            "auxpl": "do" if m.aux == "does" else m.aux,
            **kw,
        }
        if k is not None:
            word = _KW.get(k, f"{k} times")
            if k != 2 and self.rng.random() < 0.3:
                word = f"{k} times"
            ctx.update(kw=word, Kw=word[0].upper() + word[1:], kverb=_KVERB.get(k, ""))
            ctx["fw"] = _FW.get(k, "")
        text = template.format(**ctx)
        return text[0].upper() + text[1:]

    def pick_template(self, kind: str, style: str) -> tuple[str, str]:
        table = _IS_T if style == "is" else _VERB_T
        options = [(f"{kind}.{style}.{i}", t) for i, t in enumerate(table[kind])]
        if self.elide and style == "verb" and kind in _ELIDED_T:
            options += [(f"{kind}.elided.{i}", t) for i, t in enumerate(_ELIDED_T[kind])]
        return self.rng.choice(options)

    def comment(self, kind: str, s: _Qty, o: _Qty | None = None, **kw: Any) -> str:
        """The teacher's canonical reasoning line, subject ``s`` stated in terms of ``o``."""
        m = s.measure
        sname = s.entity.name if s.entity else "the number"
        oname = o.entity.name if o is not None and o.entity else ""
        k, d = kw.get("k"), kw.get("d")
        if m.style == "is":
            head = f"{s.label} is" if s.entity else "the number is"
            ol = o.label if o is not None else ""
            body = {
                "given": f"{kw.get('n')}",
                "times": f"{k} times {ol}",
                "frac": f"{ol} divided by {k}",
                "plus": f"{d} more than {ol}",
                "minus": f"{d} less than {ol}",
                "affine_plus": f"{k} times {ol} plus {d}",
                "affine_minus": f"{k} times {ol} minus {d}",
            }[kind]
            return f"{head} {body}"
        if kind == "frac":
            return f"{s.label} are {oname}'s {m.noun} divided by {k}"
        head = f"{sname} {m.verb}"
        body = {
            "given": f"{kw.get('n')} {m.noun}",
            "times": f"{k} times as many {m.noun} as {oname}",
            "plus": f"{d} more {m.noun} than {oname}",
            "minus": f"{d} fewer {m.noun} than {oname}",
            "affine_plus": f"{k} times as many {m.noun} as {oname}, plus {d}",
            "affine_minus": f"{k} times as many {m.noun} as {oname}, minus {d}",
        }[kind]
        return f"{head} {body}"

    def add(self, fact: _Fact, value: int, q: _Qty) -> None:
        if not 1 <= value <= _CAP or fact.defines in self.values:
            raise _Retry
        self.facts.append(fact)
        self.values[fact.defines] = int(value)
        self.qtys[fact.defines] = q

    def fresh(self, measure: _Measure) -> _Qty:
        return _Qty(self.entity(), measure)

    # ---- bases
    def base(self, measure: _Measure | None = None) -> _Qty:
        m = measure or self.rng.choice(self.measures)
        opts = {"given": 1.0}
        if self.family == "equation":
            opts["equation"] = 2.0 if self.hops > 1 else 1.0
            if self.hops == 1:
                opts = {"equation": 1.0}
        if self.theme is not None and m is self.theme.dst:
            opts["rate_const"] = 3.0 if self.hops == 1 else 1.0
            if self.hops == 1:
                opts = {"rate_const": 1.0}
        kind = self.choose(opts)
        q = _Qty(None, m) if self.anonymous else self.fresh(m)
        if kind == "given":
            lo, hi = (2, 12) if self.theme is not None and m is self.theme.src else (2, 25)
            n = self.rng.randint(lo, hi)
            tid, t = self.pick_template("given", m.style)
            sent = self.fmt(t, q, n=n)
            fact = _Fact(sent, self.comment("given", q, n=n), str(n), q.var, (), kind, tid)
            self.add(fact, n, q)
        elif kind == "rate_const":
            assert self.theme is not None
            t_, r = self.rng.randint(2, 10), self.rng.randint(2, 12)
            i = self.rng.randrange(len(self.theme.const))
            sent = self.fmt(self.theme.const[i], q, t=t_, r=r)
            src = self.theme.src
            com = f"{q.label} are {r} per {src.sg} times {t_} {src.noun}"
            fact = _Fact(sent, com, f"{r} * {t_}", q.var, (), kind, f"rate_const.{i}")
            self.add(fact, r * t_, q)
            self.blocked.add(_Qty(q.entity, src).var)
        else:  # equation: k * x +- d = n
            value = self.rng.randint(2, 25)
            k, d = self.rng.randint(2, 5), self.rng.randint(1, 15)
            sign = self.rng.choice(("plus", "minus")) if value * k > d else "plus"
            n = value * k + d if sign == "plus" else value * k - d
            op = "+" if sign == "plus" else "-"
            table = _ANON_EQ_T if q.entity is None else (_IS_T if m.style == "is" else _VERB_T)
            opts_t = table[f"equation_{sign}"]
            i = self.rng.randrange(len(opts_t))
            src = "anon" if q.entity is None else m.style
            sent = self.fmt(opts_t[i], q, k=k, d=d, n=n)
            words = "plus" if sign == "plus" else "minus"
            com = f"{k} times {q.label} {words} {d} is {n}; solve for {q.label}"
            code = f"solve(Eq({k} * x {op} {d}, {n}), x)[0]"
            fact = _Fact(sent, com, code, q.var, (), kind, f"equation_{sign}.{src}.{i}", True)
            self.add(fact, value, q)
        return q

    def choose(self, weights: dict[str, float]) -> str:
        items = [(k, w) for k, w in weights.items() if w > 0]
        total = sum(w for _, w in items)
        x = self.rng.random() * total
        for k, w in items:
            x -= w
            if x <= 0:
                return k
        return items[-1][0]

    # ---- growth
    def grow(self, length: int, end: _Measure | None = None) -> _Qty:
        """Facts defining one quantity with exactly ``length`` steps; returns the quantity."""
        if length == 1:
            return self.base(end)
        if length >= 3 and self.rng.random() < self.spec.sum_prob:
            left = self.rng.randint(1, length - 2)
            a = self.grow(left, end)
            b = self.grow(length - 1 - left, a.measure)
            return self.sum(a, b)
        src = self.grow(length - 1)
        return self.unary(src, end)

    def sum(self, a: _Qty, b: _Qty) -> _Qty:
        q = self.fresh(a.measure)
        tid, t = self.pick_template("sum", a.measure.style)
        assert a.entity is not None and b.entity is not None
        sent = self.fmt(t, q, a.entity, O2=b.entity.name)
        if a.measure.style == "is":
            com = f"{q.label} is {a.label} plus {b.label}"
        else:
            com = f"{q.entity.name} {a.measure.verb} as many {a.measure.noun} as "  # type: ignore[union-attr]
            com += f"{a.entity.name} and {b.entity.name} combined"
        code = f"{a.var} + {b.var}"
        self.add(
            _Fact(sent, com, code, q.var, (a.var, b.var), "sum", tid), self.val(a) + self.val(b), q
        )
        return q

    def val(self, q: _Qty) -> int:
        return self.values[q.var]

    def unary(self, src: _Qty, end: _Measure | None = None) -> _Qty:
        weights = {k: self.weight(k) for k in _WEIGHTS[self.family]}
        m = src.measure
        if self.theme is None or src.entity is None:
            weights.pop("rate", None)
            weights.pop("inv_rate", None)
        else:
            other = self.theme.dst if m is self.theme.src else self.theme.src
            if _Qty(src.entity, other).var in self.values.keys() | self.blocked:
                weights.pop("rate", None)
                weights.pop("inv_rate", None)
            elif m is self.theme.src:
                weights.pop("inv_rate", None)
            else:
                weights.pop("rate", None)
            if end is not None and end is not m:  # must switch measure now
                weights = {k: w for k, w in weights.items() if k in ("rate", "inv_rate")}
            elif end is not None:  # must stay in this measure
                weights.pop("rate", None)
                weights.pop("inv_rate", None)
        if not m.possessive:
            weights.pop("share", None)
        if m.style == "is":
            weights.pop("share", None)
        if src.entity is None:
            raise _Retry
        while weights:
            kind = self.choose(weights)
            q = getattr(self, f"_rel_{kind}")(src)
            if q is not None:
                return q
            weights.pop(kind)
        raise _Retry

    # ---- relations: each returns the new quantity, or None when infeasible for src's value
    def _rel_times(self, src: _Qty) -> _Qty | None:
        v = self.val(src)
        ks = [k for k in range(2, 6) if k * v <= _CAP and (k <= 4 or v <= 20)]
        if not ks:
            return None
        k = self.rng.choice(ks)
        return self._forward(src, "times", f"{k} * {src.var}", k * v, k=k)

    def _rel_frac(self, src: _Qty) -> _Qty | None:
        v = self.val(src)
        ks = [k for k in range(2, 6) if v % k == 0 and v // k >= 2]
        if not ks:
            return None
        k = self.rng.choice(ks)
        return self._forward(src, "frac", f"{src.var} // {k}", v // k, k=k)

    def _rel_plus(self, src: _Qty) -> _Qty | None:
        v, d = self.val(src), self.rng.randint(1, 15)
        if v + d > _CAP:
            return None
        return self._additive(src, d)

    def _rel_minus(self, src: _Qty) -> _Qty | None:
        v = self.val(src)
        if v <= 2:
            return None
        d = self.rng.randint(1, min(15, v - 2))
        return self._additive(src, -d)

    def _additive(self, src: _Qty, delta: int) -> _Qty:
        """new = src + delta, stated either way round ("B has 3 more than A" / "A has 3 fewer")."""
        q = self.fresh(src.measure)
        d = abs(delta)
        new_kind = "plus" if delta > 0 else "minus"
        equation = ""
        if self.rng.random() < 0.35:  # stated from the known side: src = new -+ d
            kind = "minus" if delta > 0 else "plus"
            tid, t = self.pick_template(kind, src.measure.style)
            sent = self.fmt(t, src, q.entity, d=d)
            tid += ".rev"
            equation = f"Eq({src.var}, {q.var} {'-' if delta > 0 else '+'} {d})"
        else:
            tid, t = self.pick_template(new_kind, src.measure.style)
            sent = self.fmt(t, q, src.entity, d=d)
        com = self.comment(new_kind, q, src, d=d)
        op = "+" if delta > 0 else "-"
        fact = _Fact(sent, com, f"{src.var} {op} {d}", q.var, (src.var,), new_kind, tid)
        fact.equation = equation
        self.add(fact, self.val(src) + delta, q)
        return q

    def _rel_affine(self, src: _Qty) -> _Qty | None:
        v = self.val(src)
        opts = [
            (k, d) for k in range(2, 5) for d in range(-12, 13) if d != 0 and 2 <= k * v + d <= _CAP
        ]
        if not opts:
            return None
        k, d = self.rng.choice(opts)
        kind = "affine_plus" if d > 0 else "affine_minus"
        op = "+" if d > 0 else "-"
        return self._forward(src, kind, f"{k} * {src.var} {op} {abs(d)}", k * v + d, k=k, d=abs(d))

    def _forward(self, src: _Qty, kind: str, code: str, value: int, **kw: Any) -> _Qty:
        q = self.fresh(src.measure)
        tid, t = self.pick_template(kind, src.measure.style)
        sent = self.fmt(t, q, src.entity, **kw)
        com = self.comment(kind, q, src, **kw)
        self.add(_Fact(sent, com, code, q.var, (src.var,), kind, tid), value, q)
        return q

    def _inverse(self, src: _Qty, kind: str, lhs: str, value: int, **kw: Any) -> _Qty:
        """src (known) = f(new): the sentence has src as subject; the teacher solves for new."""
        q = self.fresh(src.measure)
        tid, t = self.pick_template(kind, src.measure.style)
        sent = self.fmt(t, src, q.entity, **kw)
        com = self.comment(kind, src, q, **kw) + f"; solve for {q.label}"
        code = f"solve(Eq({lhs}, {src.var}), x)[0]"
        fact = _Fact(sent, com, code, q.var, (src.var,), "inv_" + kind, tid + ".inv", True)
        self.add(fact, value, q)
        return q

    def _rel_inv_times(self, src: _Qty) -> _Qty | None:
        v = self.val(src)
        ks = [k for k in range(2, 6) if v % k == 0 and v // k >= 2]
        if not ks:
            return None
        k = self.rng.choice(ks)
        return self._inverse(src, "times", f"{k} * x", v // k, k=k)

    def _rel_inv_frac(self, src: _Qty) -> _Qty | None:
        v = self.val(src)
        ks = [k for k in range(2, 5) if k * v <= _CAP]
        if not ks:
            return None
        k = self.rng.choice(ks)
        return self._inverse(src, "frac", f"x / {k}", k * v, k=k)

    def _rel_inv_affine(self, src: _Qty) -> _Qty | None:
        v = self.val(src)
        opts = [
            (k, d)
            for k in range(2, 6)
            for d in range(-12, 13)
            if d != 0 and (v - d) % k == 0 and (v - d) // k >= 2
        ]
        if not opts:
            return None
        k, d = self.rng.choice(opts)
        kind = "affine_plus" if d > 0 else "affine_minus"
        op = "+" if d > 0 else "-"
        return self._inverse(src, kind, f"{k} * x {op} {abs(d)}", (v - d) // k, k=k, d=abs(d))

    def _rel_ratio(self, src: _Qty) -> _Qty | None:
        v = self.val(src)
        opts = [
            (p, r)
            for p in range(1, 7)
            for r in range(1, 7)
            if p != r and v % p == 0 and 2 <= v // p * r <= _CAP and _gcd(p, r) == 1
        ]
        if not opts:
            return None
        p, r = self.rng.choice(opts)  # src : new = p : r
        q = self.fresh(src.measure)
        tid, t = self.pick_template("ratio", src.measure.style)
        if self.rng.random() < 0.5:
            sent = self.fmt(t, src, q.entity, p=p, q=r)
            equation = f"Eq({src.var} / {p}, {q.var} / {r})"
        else:
            sent = self.fmt(t, q, src.entity, p=r, q=p)
            equation = f"Eq({q.var} / {r}, {src.var} / {p})"
        com = f"{src.label} and {q.label} are in the ratio {p} to {r}"
        code = f"{src.var} // {p} * {r}"
        if p == 1:
            code = f"{r} * {src.var}"
        elif r == 1:
            code = f"{src.var} // {p}"
        fact = _Fact(sent, com, code, q.var, (src.var,), "ratio", tid, equation=equation)
        self.add(fact, v // p * r, q)
        return q

    def _rel_share(self, src: _Qty) -> _Qty | None:
        v = self.val(src)
        ks = [k for k in range(2, 7) if v % k == 0 and v // k >= 2]
        if not ks:
            return None
        k = self.rng.choice(ks)
        q = self.fresh(src.measure)
        tid, t = self.pick_template("share", src.measure.style)
        sent = self.fmt(t, q, src.entity, k=k)
        com = f"{q.entity.name} gets {src.label} shared equally among {k}"  # type: ignore[union-attr]
        code = f"{src.var} // {k}"
        self.add(_Fact(sent, com, code, q.var, (src.var,), "share", tid), v // k, q)
        return q

    def _rel_total(self, src: _Qty) -> _Qty | None:
        v = self.val(src)
        new = self.rng.randint(2, 25)
        n = v + new
        if n > _CAP:
            return None
        q = self.fresh(src.measure)
        tid, t = self.pick_template("total", src.measure.style)
        if self.rng.random() < 0.5:
            sent = self.fmt(t, src, q.entity, n=n)
            equation = f"Eq({src.var} + {q.var}, {n})"
        else:
            sent = self.fmt(t, q, src.entity, n=n)
            equation = f"Eq({q.var} + {src.var}, {n})"
        assert src.entity is not None and q.entity is not None
        mm = src.measure
        if mm.style == "verb":
            com = f"{src.entity.name} and {q.entity.name} {mm.plural} {n} {mm.noun} together"
        else:
            com = f"{src.label} and {q.label} add up to {n}"
        com += f", so {q.label} are {n} minus {src.label}"
        if mm.style == "is":
            com = com.replace(" are ", " is ")
        fact = _Fact(
            sent, com, f"{n} - {src.var}", q.var, (src.var,), "total", tid, equation=equation
        )
        self.add(fact, new, q)
        return q

    def _rel_rate(self, src: _Qty) -> _Qty | None:
        assert self.theme is not None
        v, rates = self.val(src), [r for r in range(2, 13) if r * self.val(src) <= _CAP]
        if not rates:
            return None
        r = self.rng.choice(rates)
        q = _Qty(src.entity, self.theme.dst)
        i = self.rng.randrange(len(self.theme.rate))
        sent = self.fmt(self.theme.rate[i], q, r=r)
        com = f"{q.label} are {r} per {src.measure.sg} times {src.label}"
        fact = _Fact(sent, com, f"{r} * {src.var}", q.var, (src.var,), "rate", f"rate.{i}")
        self.add(fact, r * v, q)
        return q

    def _rel_inv_rate(self, src: _Qty) -> _Qty | None:
        assert self.theme is not None
        v = self.val(src)
        rates = [r for r in range(2, 13) if v % r == 0 and v // r >= 1]
        if not rates:
            return None
        r = self.rng.choice(rates)
        q = _Qty(src.entity, self.theme.src)
        i = self.rng.randrange(len(self.theme.rate))
        sent = self.fmt(self.theme.rate[i], src, r=r)
        com = f"{src.label} are {r} per {q.measure.sg} times {q.label}; solve for {q.label}"
        code = f"solve(Eq({r} * x, {src.var}), x)[0]"
        fact = _Fact(sent, com, code, q.var, (src.var,), "inv_rate", f"rate.{i}.inv", True)
        self.add(fact, v // r, q)
        return q

    # ---- roots
    def build(self) -> tuple[_Fact | None, str, _Qty, str]:
        """All needed facts; returns (root step or None, question text, target, root kind)."""
        h = self.hops
        m = self.measures[0]
        roots = {"ask": 6.0}
        if h >= 3:
            roots.update(total=1.5, diff=1.5)
        if h >= 2 and m.possessive and m.style == "verb" and self.family in ("chain", "ratio"):
            roots["share"] = 3.0 if self.family == "ratio" else 0.7
        root = self.choose(roots)
        if root == "ask":
            target = self.grow(h, self.theme.dst if self.theme and h == 1 else None)
            if self.anonymous:
                i = self.rng.randrange(len(_ANON_Q))
                self.root_template = f"ask.anon.{i}"
                return None, _ANON_Q[i], target, root
            i = self.rng.randrange(len(_QUESTIONS[("ask", target.measure.style)]))
            t = _QUESTIONS[("ask", target.measure.style)][i]
            self.root_template = f"ask.{target.measure.style}.{i}"
            return None, self.fmt(t, target), target, root
        if root == "share":
            src = self.grow(h - 1)
            v = self.val(src)
            ks = [k for k in range(2, 7) if v % k == 0 and v // k >= 1]
            if not ks:
                raise _Retry
            k = self.rng.choice(ks)
            i = self.rng.randrange(len(_QUESTIONS[("share", "verb")]))
            text = self.fmt(_QUESTIONS[("share", "verb")][i], src, k=k)
            self.root_template = f"share.verb.{i}"
            tq = _Qty(None, _Measure("each_share", src.measure.noun, src.measure.sg))
            com = f"Divide {src.label} equally among {k}"
            fact = _Fact("", com, f"{src.var} // {k}", "each_share", (src.var,), "share_root", "")
            self.add(fact, v // k, tq)
            return fact, text, tq, root
        left = self.rng.randint(1, h - 2)
        a = self.grow(left)
        b = self.grow(h - 1 - left, a.measure)
        if root == "diff" and self.val(a) == self.val(b):
            raise _Retry
        if root == "diff" and self.val(a) < self.val(b):
            a, b = b, a
        style = a.measure.style
        i = self.rng.randrange(len(_QUESTIONS[(root, style)]))
        assert b.entity is not None
        text = self.fmt(_QUESTIONS[(root, style)][i], a, b.entity)
        self.root_template = f"{root}.{style}.{i}"
        if root == "total":
            var, code = f"total_{a.measure.key}", f"{a.var} + {b.var}"
            com, value = f"Add {a.label} and {b.label}", self.val(a) + self.val(b)
        else:
            var, code = "difference", f"{a.var} - {b.var}"
            com, value = f"Subtract {b.label} from {a.label}", self.val(a) - self.val(b)
        fact = _Fact("", com, code, var, (a.var, b.var), root, "")
        self.facts.append(fact)
        self.values[var] = value
        return fact, text, _Qty(None, _Measure(var, "", "")), root

    # ---- distractors
    def distractor(self, needed: list[_Fact]) -> tuple[str, str, str]:
        """One fact the answer does not need: (sentence, template id, equation).

        The equation (``"cal_marbles = 3 * ann_marbles"``) says what the sentence says, in the
        form the every-sentence teacher writes (:func:`teacher_solution`).
        """
        kinds = {"misc": 1.0}
        needed_vars = {f.defines for f in needed}
        qtys = [q for v, q in self.qtys.items() if v in needed_vars and q.entity is not None]
        if qtys:
            kinds["branch"] = 2.0
        if self.measures[0].style == "verb" and self.theme is None and not self.elide and qtys:
            kinds["other"] = 1.5
        kind = self.choose(kinds)
        if kind == "branch":
            src = self.rng.choice(qtys)
            rel = self.choose({"times": 1, "plus": 1.5, "minus": 1.5, "affine": 1, "frac": 0.5})
            v = self.val(src)
            e = self.entity()
            q = _Qty(e, src.measure)
            if rel == "times" and v * 3 <= _CAP:
                k = self.rng.randint(2, 3)
                tid, t = self.pick_template("times", src.measure.style)
                eq = f"{q.var} = {k} * {src.var}"
                return self.fmt(t, q, src.entity, k=k), "d." + tid, eq
            if rel == "frac" and v % 2 == 0:
                tid, t = self.pick_template("frac", src.measure.style)
                return self.fmt(t, q, src.entity, k=2), "d." + tid, f"{q.var} = {src.var} / 2"
            if rel == "affine" and v * 2 + 3 <= _CAP:
                tid, t = self.pick_template("affine_plus", src.measure.style)
                d = self.rng.randint(1, 9)
                eq = f"{q.var} = 2 * {src.var} + {d}"
                return self.fmt(t, q, src.entity, k=2, d=d), "d." + tid, eq
            if rel == "minus" and v > 3:
                tid, t = self.pick_template("minus", src.measure.style)
                d = self.rng.randint(1, v - 2)
                return self.fmt(t, q, src.entity, d=d), "d." + tid, f"{q.var} = {src.var} - {d}"
            tid, t = self.pick_template("plus", src.measure.style)
            d = self.rng.randint(1, 12)
            return self.fmt(t, q, src.entity, d=d), "d." + tid, f"{q.var} = {src.var} + {d}"
        if kind == "other":
            if self.other_measure is None:
                self.other_measure = _object_measure(self.rng, exclude=[self.measures[0].noun])
            om = self.other_measure
            ent = self.rng.choice(qtys).entity
            assert ent is not None
            n = self.rng.randint(2, 25)
            t = self.rng.choice(("{S} also {V} {n} {N}.", "{S} {V} {n} {N} as well."))
            return self.fmt(t, _Qty(ent, om), n=n), "d.other", f"{_Qty(ent, om).var} = {n}"
        ents = [q.entity for q in qtys] or [self.entity()]
        i = self.rng.randrange(len(_MISC_T))
        ent = self.rng.choice(ents)
        n = self.rng.randint(3, 40)
        eq = f"{_MISC_VARS[i].format(s=ent.slug)} = {n}"
        return self.fmt(_MISC_T[i], ent, n=n), f"d.misc{i}", eq


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _topo_order(facts: Sequence[_Fact], position: dict[int, int]) -> list[_Fact]:
    """Dependency order, ties broken by where each fact appears in the question."""
    defined = {f.defines for f in facts}
    done: set[str] = set()
    left = list(range(len(facts)))
    out: list[_Fact] = []
    while left:
        ready = [i for i in left if all(d in done or d not in defined for d in facts[i].deps)]
        i = min(ready, key=lambda j: position[j])
        out.append(facts[i])
        done.add(facts[i].defines)
        left.remove(i)
    return out


def _make_one(rng: random.Random, spec: LevelSpec, family: str) -> SyntheticProblem:
    lo = max(spec.hops[0], _MIN_HOPS[family])
    hops = rng.randint(lo, max(lo, spec.hops[1]))
    for _ in range(200):
        b = _Builder(rng, family, spec, hops)
        b.root_template = ""
        try:
            root, question_text, target, root_kind = b.build()
            kinds = {f.kind for f in b.facts} | {"share_root" if root_kind == "share" else ""}
            if not kinds & _SIGNATURE[family] or not all(1 <= v <= 999 for v in b.values.values()):
                continue
            needed = [f for f in b.facts if f is not root]
            n_dis = rng.randint(*spec.distractors)
            distractors = [b.distractor(needed) for _ in range(n_dis)]
        except _Retry:
            continue
        stated = [eq.split(" = ")[0] for _, _, eq in distractors]
        if len(set(stated)) < len(stated):  # "Ann is 9 years old. ... Ann is 12 years old."
            continue
        return _assemble(rng, spec, family, b, root, question_text, target, needed, distractors)
    raise RuntimeError(f"could not generate a {family} problem at {spec.name}")  # pragma: no cover


def _assemble(
    rng: random.Random,
    spec: LevelSpec,
    family: str,
    b: _Builder,
    root: _Fact | None,
    question_text: str,
    target: _Qty,
    needed: list[_Fact],
    distractors: list[tuple[str, str, str]],
) -> SyntheticProblem:
    order = b.choose(dict(zip(("forward", "reversed", "shuffled"), spec.order, strict=True)))
    idx = list(range(len(needed)))
    if order == "reversed":
        idx.reverse()
    elif order == "shuffled":
        rng.shuffle(idx)
    # sentences: ("fact", i) or ("distractor", j); distractors at random places
    items: list[tuple[str, int]] = [("fact", i) for i in idx]
    for j in range(len(distractors)):
        items.insert(rng.randint(0, len(items)), ("distractor", j))
    sentences, position, equations = [], {}, []
    for pos, (what, i) in enumerate(items):
        if what == "fact":
            sentences.append(needed[i].sentence)
            position[i] = pos
            equations.append(_fact_equation(needed[i]))
        else:
            sentences.append(distractors[i][0])
            equations.append(distractors[i][2])
    question = " ".join([*sentences, question_text])
    if root is not None:  # the question itself states the root's relation ("... together?")
        sentences.append(question_text)
        equations.append(_fact_equation(root))

    steps_facts = _topo_order(needed, position)
    if root is not None:
        steps_facts.append(root)
    steps: list[tuple[str, str]] = []
    sympy_ready = False
    for f in steps_facts:
        if f.sympy:
            lines = []
            if not sympy_ready:
                lines += ["from sympy import symbols, Eq, solve", "x = symbols('x')"]
                sympy_ready = True
            lines.append(f"{f.defines} = {f.code}")
            steps.append((f.comment, "\n".join(lines)))
        else:
            steps.append((f.comment, f"{f.defines} = {f.code}"))
    answer = str(b.values[target.var])
    program = "\n".join(code for _, code in steps) + f"\nprint({target.var})"
    out = run_program(program)
    if out != answer:  # pragma: no cover - a generator bug, never a data property
        raise AssertionError(f"teacher program printed {out!r}, expected {answer!r}:\n{program}")
    solution = _render(steps, target.var, answer, numbered=True)
    templates = [f.template for f in needed if f.template] + [t for _, t, _ in distractors]
    defined = {f.defines for f in steps_facts}
    meta = {
        "order": order,
        "distractors": len(distractors),
        "distractor_sentences": [d for d, _, _ in distractors],
        "templates": templates,
        "question_template": b.root_template,
        "relations": [f.kind for f in steps_facts],
        "names": sorted({q.entity.name for q in b.qtys.values() if q.entity is not None}),
        "measures": [m.key for m in b.measures],
        "theme": b.theme.name if b.theme else None,
        # (quantity a step defines, the stepped quantities it uses), in step order: the graph a
        # planned solution (teacher_solution(plan=True)) walks backwards
        "step_deps": [[f.defines, [d for d in f.deps if d in defined]] for f in steps_facts],
        # the question's sentence each step reads (the question itself for a root step): what a
        # quoting teacher (teacher_solution(quote=True)) writes as the step's comment
        "step_sentences": [f.sentence or question_text for f in steps_facts],
        # each step as an equation in its sentence's direction: what the equation teacher
        # (teacher_solution(equations=True)) writes
        "step_equations": [
            f.equation or _equation_of(f"{f.defines} = {f.code}") for f in steps_facts
        ],
        # every sentence of the question in order, distractors included (and the question
        # itself where it states a relation), each with the equation it states: what the
        # every-sentence teacher (teacher_solution(every_sentence=True)) writes
        "sentence_equations": [list(se) for se in zip(sentences, map(_plain, equations))],
    }
    return SyntheticProblem(
        question=question,
        answer=answer,
        solution=solution,
        level=spec.name,
        family=family,
        hops=len(steps),
        steps=tuple(steps),
        target=target.var,
        meta=meta,
    )


# --------------------------------------------------------------------------- public API


def _resolve_levels(
    level: str | int | LevelSpec | Sequence[str | int | LevelSpec],
) -> list[LevelSpec]:
    items = [level] if isinstance(level, (str, int, LevelSpec)) else list(level)
    if not items:
        raise ValueError("at least one level is needed")
    out = []
    for item in items:
        if isinstance(item, LevelSpec):
            out.append(item)
            continue
        key = str(item)
        key = f"level{key}" if key.isdigit() else key
        if key not in LEVELS:
            raise ValueError(f"unknown level {item!r}; known: {sorted(LEVELS)}")
        out.append(LEVELS[key])
    return out


def _generate(
    n: int,
    levels: list[LevelSpec],
    families: Sequence[str],
    rng: random.Random,
    exclude: set[str],
) -> list[SyntheticProblem]:
    for fam in families:
        if fam not in _MIN_HOPS:
            raise ValueError(f"unknown family {fam!r}; known: {list(FAMILIES)}")
    out: list[SyntheticProblem] = []
    seen = set(exclude)
    i = attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"could not generate {n} distinct problems (got {len(out)})")
        spec = levels[(i // len(families)) % len(levels)]
        fam = families[i % len(families)]
        p = _make_one(rng, spec, fam)
        if p.question in seen:
            continue
        seen.add(p.question)
        out.append(p)
        i += 1
    return out


def generate_problems(
    n: int,
    level: str | int | LevelSpec | Sequence[str | int | LevelSpec] = TRAIN_LEVELS,
    seed: int = 0,
    families: Sequence[str] = FAMILIES,
) -> list[SyntheticProblem]:
    """``n`` distinct problems, cycling through ``families`` and ``level`` (deterministic).

    ``level`` is a level name (``"level1"``, ``"level2"``, ``"level3"``, ``"hard"``; ``1`` or
    ``"1"`` work too), a :class:`LevelSpec`, or a sequence of them.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(f"rstar-synthetic:{seed}")
    return _generate(n, _resolve_levels(level), list(families), rng, set())


def make_splits(
    seed: int = 0,
    n_train: int = 4000,
    n_val: int = 300,
    n_hard: int = 300,
    train_levels: Sequence[str | int | LevelSpec] = TRAIN_LEVELS,
    hard_level: str | LevelSpec = HARD_LEVEL,
    families: Sequence[str] = FAMILIES,
) -> dict[str, list[SyntheticProblem]]:
    """``train`` and ``val`` (same distribution, disjoint questions) and the held-out ``hard``.

    Every hard problem uses more hops than any training level allows.
    """
    train_specs = _resolve_levels(train_levels)
    (hard_spec,) = _resolve_levels(hard_level)
    max_train = max(s.hops[1] for s in train_specs)
    if hard_spec.hops[0] <= max_train:
        raise ValueError(
            f"the hard level needs more hops than training ({hard_spec.hops} vs <= {max_train})"
        )
    fams = list(families)
    train = _generate(n_train, train_specs, fams, random.Random(f"{seed}:train"), set())
    seen = {p.question for p in train}
    val = _generate(n_val, train_specs, fams, random.Random(f"{seed}:val"), seen)
    seen |= {p.question for p in val}
    hard = _generate(n_hard, [hard_spec], fams, random.Random(f"{seed}:hard"), seen)
    return {"train": train, "val": val, "hard": hard}


def to_sft_records(problems: Iterable[SyntheticProblem]) -> list[SFTRecord]:
    """Policy SFT records (question, teacher solution as the response) of ``problems``."""
    return [p.to_sft_record() for p in problems]


def corpus(
    n: int = 2000,
    seed: int = 0,
    levels: Sequence[str | int | LevelSpec] = TRAIN_LEVELS,
    prompt: Any = None,
    include_vocabulary: bool = True,
    plan: bool = False,
    quote: bool = False,
    equations: bool = False,
    every_sentence: bool = False,
) -> list[str]:
    """Texts to train a tokenizer on: ``prompt.render(question) + solution`` for ``n`` problems.

    ``prompt`` defaults to :meth:`rstar_math.format.PromptTemplate.sft`. With
    ``include_vocabulary`` one more text lists every name and object, so each is seen at least
    once even in a small corpus. ``plan=True`` uses the planned teacher solutions
    (:func:`teacher_solution`), whose plan lines a tokenizer should see too; ``quote=True``
    the quoting ones, ``equations=True`` the ones written as equations and
    ``every_sentence=True`` the ones that write every sentence.
    """
    from rstar_math.format import PromptTemplate

    template = prompt if prompt is not None else PromptTemplate.sft()
    problems = generate_problems(n, levels, seed)
    texts = [
        template.render(p.question)
        + teacher_solution(
            p, plan=plan, quote=quote, equations=equations, every_sentence=every_sentence
        )
        for p in problems
    ]
    if include_vocabulary:
        words = [name for name, _ in NAMES] + [plural for plural, _ in OBJECTS]
        words += [sg for _, sg in OBJECTS] + [name.lower() for name, _ in NAMES]
        texts.append(" ".join(words))
    return texts
