"""Scripted policies used by evolution tests (importable as ``module:function`` factories).

``noisy_arithmetic`` answers "What is A plus B?" with three candidate first steps (add: right;
subtract, multiply: wrong), so terminal-guided MCTS produces correct and wrong branches and hence
SFT records and preference pairs, deterministically.
"""

from __future__ import annotations

import re

from rstar_math.generators.scripted import ScriptedGenerator
from rstar_math.interfaces import GenerationRequest

_QUESTION = re.compile(r"What is (\d+) plus (\d+)\?")


def arithmetic_script(request: GenerationRequest) -> list[str]:
    prompt = request.prompt
    if prompt.endswith("<end_of_output>\n"):
        value = prompt.rsplit("<output>", 1)[1].split("<end_of_output>")[0].strip()
        return [f"<answer>The answer is \\boxed{{{value}}}.<end_of_answer>"]
    if prompt.endswith("<end_of_step>"):
        return ["\n# Now print the final answer\nprint(result)\n<end_of_code>"]
    match = _QUESTION.findall(prompt)
    a, b = match[-1] if match else ("1", "1")
    return [
        f"<code>\n# Step 1: add the two numbers\nresult = {a} + {b}\n<end_of_step>",
        f"<code>\n# Step 1: subtract the numbers\nresult = {a} - {b}\n<end_of_step>",
        f"<code>\n# Step 1: multiply the numbers\nresult = {a} * {b}\n<end_of_step>",
    ]


def noisy_arithmetic(latency_s: float = 0.0) -> ScriptedGenerator:
    return ScriptedGenerator(arithmetic_script, latency_s=latency_s)


def problems_jsonl(path, n: int = 6) -> None:
    """Write ``n`` arithmetic problems as plain JSONL."""
    import json

    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            a, b = 3 + i, 10 + 2 * i
            fh.write(
                json.dumps(
                    {"id": f"p{i}", "question": f"What is {a} plus {b}?", "answer": str(a + b)}
                )
                + "\n"
            )
