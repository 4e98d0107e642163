"""Quickstart: solve a problem end to end with MCTS, a scripted policy and the sandbox.

The scripted policy stands in for a language model: at each step it proposes a few candidate next
steps in rStar-Math's code-augmented chain-of-thought format (one of them wrong), the sandbox runs
each step's Python, and MCTS with terminal-guided annotation learns which steps lead to the right
answer. Swap ``ScriptedGenerator`` for ``HFGenerator("path/to/model")`` to use a real model.

Run:  python examples/quickstart.py
"""

from __future__ import annotations

import logging

from rstar_math import MCTSSolver, SearchConfig
from rstar_math.generators.scripted import ScriptedGenerator
from rstar_math.interfaces import GenerationRequest

QUESTION = "Find x such that 2x + 3 = 11."


def policy(request: GenerationRequest) -> list[str]:
    """Candidate next steps given the solution so far (the text after the prompt)."""
    solution = request.prompt.split("solve the problem with code.", 1)[-1]
    if "<output>" in solution:
        printed = solution.rsplit("<output>", 1)[1].split("<end_of_output>", 1)[0].strip()
        value = printed.strip("[]")
        return [f"<answer>From the output, x = \\boxed{{{value}}}.<end_of_answer>"]
    if "solve(" in solution:
        return ["\n# Now print the final answer\nprint(solution)\n<end_of_code>"]
    if "equation" in solution:
        return [
            "\n# Step 2: solve the equation for x\nsolution = solve(equation, x)\n<end_of_step>",
            "\n# Step 2: move 3 to the right-hand side (sign error)\n"
            "solution = solve(Eq(2 * x, 11 + 3), x)\n<end_of_step>",
        ]
    return [
        "<code>\n# Step 1: define the unknown and the equation\n"
        "from sympy import Eq, solve, symbols\nx = symbols('x')\n"
        "equation = Eq(2 * x + 3, 11)\n<end_of_step>",
        "<code>\n# Step 1: a step whose code does not run\n"
        "equation = Eq(2 * x + 3, 11)\n<end_of_step>",
    ]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    config = SearchConfig(num_rollouts=8, num_candidates=4, unvisited="inf")
    with MCTSSolver(ScriptedGenerator(policy), config=config) as solver:
        result = solver.solve(QUESTION, reference="4")
    print(result.trajectory.pretty() if result.trajectory else "no trajectory")
    print()
    print(f"answer: {result.answer}   correct: {result.correct}")
    print(f"tree: {len(result.tree)} nodes, {len(result.trajectories)} answered trajectories")
    for node in result.tree.children(result.tree.root):
        first_line = node.text.strip().splitlines()[1]
        print(f"  root child N={node.visits} Q={node.q:+.2f}  {first_line}")
    stats = result.stats
    print(
        f"generation requests: {stats['generation_requests']}, "
        f"executions: {stats['executions']} ({stats['failed_executions']} failed)"
    )


if __name__ == "__main__":
    main()
