"""The code-augmented chain-of-thought format of rStar-Math.

A solution is one Python program written in steps. Each step is natural-language reasoning as ``#``
comments plus code and ends with ``<end_of_step>``; the first step opens with ``<code>``; the last
code step prints the answer and ends with ``<end_of_code>``; the program's output follows as
``<output>...<end_of_output>``; the final step is ``<answer>...\\boxed{...}<end_of_answer>``::

    <code>
    # Step 1: ...
    x = 2 * 20 * 12
    <end_of_step>
    # Now print the final answer
    print(x)
    <end_of_code>
    <output>480<end_of_output>
    <answer>The answer is \\boxed{480}.<end_of_answer>

This module owns every string of that format: prompt templates, parsing one generated step given the
marker that stopped it, extracting code and answers, and rendering a path of steps back into the
text the policy continues from. Search, training and the PPM all go through it, so the format is
defined once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rstar_math.tree import StepKind

if TYPE_CHECKING:
    from rstar_math.tree import Node

__all__ = [
    "ANSWER_END",
    "ANSWER_START",
    "CODE_END",
    "CODE_START",
    "OUTPUT_END",
    "OUTPUT_START",
    "SPECIAL_MARKERS",
    "STEP_END",
    "STOP_MARKERS",
    "ChatPromptTemplate",
    "ParsedStep",
    "PromptTemplate",
    "Prompter",
    "extract_boxed",
    "extract_code",
    "extract_program",
    "format_output",
    "is_answer_step",
    "parse_step",
    "render_steps",
    "split_solution",
    "step_chunks",
]

CODE_START = "<code>"
STEP_END = "<end_of_step>"
CODE_END = "<end_of_code>"
OUTPUT_START = "<output>"
OUTPUT_END = "<end_of_output>"
ANSWER_START = "<answer>"
ANSWER_END = "<end_of_answer>"

#: Markers that end a generated step; generation stops at the first one.
STOP_MARKERS: tuple[str, ...] = (STEP_END, CODE_END, ANSWER_END)
#: Every marker of the format (added to tokenizers as special tokens by the SFT trainer).
SPECIAL_MARKERS: tuple[str, ...] = (
    CODE_START,
    STEP_END,
    CODE_END,
    OUTPUT_START,
    OUTPUT_END,
    ANSWER_START,
    ANSWER_END,
)

_SFT_SUFFIX = (
    "<|user|>:\n{question}\n"
    "<|assistant|>: Let's think step by step and solve the problem with code."
)
_BOOTSTRAP_INSTRUCTIONS = (
    "You are a powerful agent with broad math knowledge and great python programming skills. "
    "You need to use python interpreter to do accurate calculation on math equations.\n\n"
    "!!! Remember:\n"
    "1. Use code solve the problem step by step. The solution should include three parts: "
    "<code>, <output>, and <answer>.\n"
    "2. All calculations should be done in python code. Provide concise reasoning and thinking "
    "in the comments of the code.\n"
    "3. The most related python packages include `math`, `sympy`, `scipy`, and `numpy`.\n"
    "4. Please use the following template:\n\n"
    "Question: the input question\n"
    "<code>Construct the code step by step. Use <end_of_step> to indicate the end of each step. "
    "Ensure your code can execute correctly(excluding <end_of_step>) and print the answer. "
    "Avoid undefined variables (NameError), unimported packages, or formatting errors "
    "(SyntaxError, TypeError). In the last step of the code, print the final answer and add a "
    "comment: Now print the final answer.<end_of_code>\n"
    "<output>Execute the code in using the Python interpreter and display the printed "
    "results.<end_of_output>\n"
    "<answer>The concise answer without verbose context, put your final answer's numerical part "
    "(without unit, only focus on the numerical part if it's a choice question) in "
    "\\boxed{}.<end_of_answer>"
)
_BOOTSTRAP_SUFFIX = "Now! It's your turn.\nQuestion: {question}"


# --------------------------------------------------------------------------- prompts


@runtime_checkable
class Prompter(Protocol):
    """Anything that turns a question into the prompt the policy continues from."""

    def render(self, question: str) -> str: ...


@dataclass(frozen=True)
class PromptTemplate:
    """A plain-text prompt: instructions, few-shot examples, then the question.

    ``suffix`` holds the question slot ``{question}`` (the reference's ``{input}`` is accepted
    too). The parts are joined with ``separator``. ``PromptTemplate.sft()`` is the template the
    paper's SFT policies are trained on; ``PromptTemplate.few_shot()`` the bootstrap prompt.
    """

    suffix: str = _SFT_SUFFIX
    instructions: str = ""
    few_shots: tuple[str, ...] = ()
    separator: str = "\n\n"
    #: Text placed after the rendered prompt, before the first step (e.g. "\n").
    response_prefix: str = ""

    def __post_init__(self) -> None:
        if "{question}" not in self.suffix and "{input}" not in self.suffix:
            raise ValueError(
                "PromptTemplate.suffix must contain the placeholder '{question}' "
                f"(or the reference's '{{input}}'); got {self.suffix!r}"
            )

    def render(self, question: str) -> str:
        if not isinstance(question, str):
            raise TypeError(f"question must be a str, got {type(question).__name__}")
        suffix = self.suffix.replace("{input}", "{question}").replace("{question}", question)
        parts = [p for p in (self.instructions, *self.few_shots) if p]
        parts.append(suffix)
        return self.separator.join(parts) + self.response_prefix

    @classmethod
    def sft(cls) -> PromptTemplate:
        """The reference's SFT prompt (``<|user|>:\\n{question}\\n<|assistant|>: ...``)."""
        return cls(suffix=_SFT_SUFFIX, response_prefix="\n")

    @classmethod
    def few_shot(
        cls, examples: Sequence[str] = (), instructions: str | None = None
    ) -> PromptTemplate:
        """The reference's bootstrap prompt: format instructions, worked examples, the question."""
        return cls(
            suffix=_BOOTSTRAP_SUFFIX,
            instructions=_BOOTSTRAP_INSTRUCTIONS if instructions is None else instructions,
            few_shots=tuple(examples),
            response_prefix="\n",
        )

    @classmethod
    def from_reference_json(
        cls, prompt_path: str | Path, few_shots_path: str | Path | None = None
    ) -> PromptTemplate:
        """Load the reference's ``{pot_format_instructions, pot_suffix}`` JSON (+ few-shots)."""
        data = json.loads(Path(prompt_path).read_text(encoding="utf-8"))
        for key in ("pot_format_instructions", "pot_suffix"):
            if key not in data:
                raise ValueError(f"{prompt_path}: missing the field {key!r}")
        shots: tuple[str, ...] = ()
        if few_shots_path is not None:
            loaded = json.loads(Path(few_shots_path).read_text(encoding="utf-8"))
            if not isinstance(loaded, list) or not all(isinstance(s, str) for s in loaded):
                raise ValueError(f"{few_shots_path}: expected a JSON list of strings")
            shots = tuple(loaded)
        return cls(
            suffix=data["pot_suffix"],
            instructions=data["pot_format_instructions"],
            few_shots=shots,
            response_prefix="\n",
        )


@dataclass
class ChatPromptTemplate:
    """Render the question through a Hugging Face tokenizer's chat template.

    ``user_format`` wraps the question (e.g. to add the step-format instructions); the assistant
    turn is opened with ``add_generation_prompt=True`` and ``response_prefix`` appended.
    """

    tokenizer: Any
    system: str | None = None
    user_format: str = "{question}"
    response_prefix: str = ""
    chat_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(
                "the tokenizer has no chat_template; use PromptTemplate.sft() or set "
                "tokenizer.chat_template"
            )

    def render(self, question: str) -> str:
        messages = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": self.user_format.format(question=question)})
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.chat_kwargs
        )
        return str(text) + self.response_prefix


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class ParsedStep:
    """A generated step, classified.

    ``text`` is the full step text with its stop marker; ``code`` the Python it adds (empty for
    an answer step); ``answer`` the last ``\\boxed{}`` content of an answer step.
    """

    kind: StepKind
    text: str
    code: str = ""
    answer: str | None = None


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces), or None."""
    from rstar_math.grading import last_boxed

    return last_boxed(text)


def extract_code(text: str) -> str:
    """The Python of one step: the text without format markers or anything after them."""
    start = text.find(CODE_START)
    if start != -1:
        text = text[start + len(CODE_START) :]
    for marker in (OUTPUT_START, ANSWER_START):
        cut = text.find(marker)
        if cut != -1:
            text = text[:cut]
    for marker in STOP_MARKERS:
        text = text.replace(marker, "")
    return text.strip("\n")


def is_answer_step(text: str, stop: str | None = None) -> bool:
    """Whether a step is the final-answer step (``<answer>`` or ended by ``<end_of_answer>``)."""
    return stop == ANSWER_END or ANSWER_START in text


def parse_step(text: str, stop: str | None) -> ParsedStep:
    """Classify a generated step given the marker that stopped it (None: cut by length)."""
    full = text + (stop or "")
    if is_answer_step(text, stop):
        if stop is None:
            return ParsedStep(StepKind.INVALID, full)
        return ParsedStep(StepKind.ANSWER, full, answer=extract_boxed(text))
    if stop == STEP_END:
        return ParsedStep(StepKind.CODE, full, code=extract_code(text))
    if stop == CODE_END:
        return ParsedStep(StepKind.FINAL_CODE, full, code=extract_code(text))
    return ParsedStep(StepKind.INVALID, full)


def format_output(stdout: str, max_chars: int = 1024) -> str:
    """The ``<output>`` block that follows a final code step (stdout stripped, long output cut)."""
    out = stdout.strip()
    if len(out) > max_chars:
        out = out[:max_chars] + "\n...[output truncated]"
    return f"\n{OUTPUT_START}{out}{OUTPUT_END}\n"


def step_chunks(nodes: Sequence[Node], max_output_chars: int = 1024) -> list[str]:
    """The text each step of a path contributes to the solution, in order.

    A final code step's chunk carries its program's output (the stdout of every step on the path
    so far) spliced in as ``<output>...<end_of_output>``, as the paper's format prescribes. The
    PPM scores ``"".join(chunks)`` after the prompt; the policy continues from the same text.
    """
    chunks: list[str] = []
    stdout: list[str] = []
    for node in nodes:
        if node.exec_ok and node.output:
            stdout.append(node.output)
        if node.kind is StepKind.FINAL_CODE:
            chunks.append(node.text + format_output("".join(stdout), max_output_chars))
        else:
            chunks.append(node.text)
    return chunks


def render_steps(nodes: Sequence[Node], max_output_chars: int = 1024) -> str:
    """Join a path of steps into the text the policy continues from (see :func:`step_chunks`)."""
    return "".join(step_chunks(nodes, max_output_chars))


_SPLIT_RE = re.compile("(" + "|".join(re.escape(m) for m in (STEP_END, CODE_END, ANSWER_END)) + ")")


def split_solution(solution: str) -> list[ParsedStep]:
    """Split a complete solution (e.g. an SFT response) into its parsed steps.

    The ``<output>`` block after ``<end_of_code>`` belongs to no step (it is regenerated from the
    executed code when rendering) and is dropped.
    """
    pieces = _SPLIT_RE.split(solution)
    steps: list[ParsedStep] = []
    for i in range(0, len(pieces) - 1, 2):
        body, marker = pieces[i], pieces[i + 1]
        if steps and steps[-1].kind is StepKind.FINAL_CODE:
            # drop the output block between <end_of_code> and <answer>
            start = body.find(ANSWER_START)
            body = body[start:] if start != -1 else body
        steps.append(parse_step(body, marker))
    return steps


def extract_program(solution: str) -> str:
    """The Python program of a complete solution: every code step's code, in order."""
    return "\n".join(
        s.code for s in split_solution(solution) if s.kind in (StepKind.CODE, StepKind.FINAL_CODE)
    )
