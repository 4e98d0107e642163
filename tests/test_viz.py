"""Tree views: the self-contained HTML page (checked in a real headless Chromium), DOT, pretty().

The trees come from real :class:`MCTSSolver` runs with a scripted policy, so they hold graded
answers, failing code kept as error nodes, execution output and PPM values. One candidate step is
hostile (script and event-handler injection in what the "model" wrote): it must show as text and
never run.

Browser tests (``-m browser``) need Debian's ``chromium`` and ``chromium-driver``
(``.ci/install_browser.sh``) and ``selenium`` (the ``dev`` extra); they skip when any is missing,
or fail with ``RSTAR_REQUIRE_BROWSER=1`` (CI). Screenshots are saved in the test's tmp dir
(``--basetemp=DIR`` to keep them somewhere known).
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from rstar_math import MCTSSolver, SearchConfig, StepKind, TerminalKind, Tree
from rstar_math.generators.scripted import ScriptedGenerator
from rstar_math.interfaces import GenerationRequest
from rstar_math.viz import select_nodes, tree_to_dot, tree_to_html
from tests.helpers import FunctionScorer, InProcessExecutor

# --------------------------------------------------------------------------- a real tree

HOSTILE = (
    "<code>\n# Step 1: </pre></details><script>window.__pwned = 1</script> & \"quotes\" 'too'\n"
    '# <img src=x onerror="window.__pwned = 2"> <a href="javascript:alert(1)">link</a>\n'
    "x = 3\n<end_of_step>"
)
LONG = "<code>\n" + "".join(f"# Step 1: line {i} of a very long step\n" for i in range(60))
LONG += "x = 1\n<end_of_step>"
STEPS = {
    "one": "<code>\n# Step 1: take one\nx = 1\n<end_of_step>",
    "two": "<code>\n# Step 1: take two\nx = 2\n<end_of_step>",
    "fail": "<code>\n# Step 1: divide by zero\nx = 1 / 0\n<end_of_step>",
    "hostile": HOSTILE,
    "long": LONG,
}
PRINT = "\n# Now print the final answer\nprint(x)\n<end_of_code>"
CHECK = "\n# Step 2: double check the choice\nassert x > 0\n<end_of_step>"


def script(request: GenerationRequest) -> list[str]:
    prompt = request.prompt
    if prompt.endswith("<end_of_output>\n"):
        value = prompt.rsplit("<output>", 1)[1].split("<end_of_output>")[0].strip()
        return [f"<answer>The answer is \\boxed{{{value}}}.<end_of_answer>"]
    if prompt.endswith("<end_of_step>"):
        return [PRINT] if "# Step 2" in prompt else [PRINT, CHECK]
    return list(STEPS.values())


def ppm(text: str) -> float:
    return 0.8 if "x = 1\n" in text else -0.3


def solve_tree(num_rollouts: int = 24) -> Tree:
    config = SearchConfig(
        num_rollouts=num_rollouts,
        num_candidates=len(STEPS),
        unvisited="inf",
        keep_failed_steps=True,
        max_consecutive_code_errors=1,
    )
    solver = MCTSSolver(
        ScriptedGenerator(script),
        scorer=FunctionScorer(ppm),
        executor=InProcessExecutor(),
        config=config,
    )
    return solver.solve("Pick a number & print it: <b>bold?</b>", reference="1").tree


@pytest.fixture(scope="module")
def tree() -> Tree:
    return solve_tree()


def big_tree(num_nodes: int, branching: int = 8) -> Tree:
    """A synthetic wide tree (breadth-first, ``branching`` children per node)."""
    tree = Tree("A big tree.", reference="7")
    i = 0
    while len(tree.nodes) < num_nodes:
        parent = tree.nodes[i]
        for _ in range(branching):
            if len(tree.nodes) >= num_nodes:
                break
            node = tree.add_child(
                parent, text=f"<code>\n# Step: node {len(tree.nodes)}\nx = 1\n<end_of_step>"
            )
            node.kind = StepKind.CODE
            node.visits = max(1, 1000 // (node.depth**3))
            node.value_sum = 0.1 * node.visits
            node.ppm_value = 0.1
        i += 1
    last = tree.nodes[-1]
    last.kind, last.terminal, last.answer, last.grade = (
        StepKind.ANSWER,
        TerminalKind.ANSWER,
        "7",
        True,
    )
    last.terminal_value = 1.0
    return tree


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parse_tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


# --------------------------------------------------------------------------- HTML (no browser)


def test_the_scripted_tree_has_everything_the_view_shows(tree: Tree) -> None:
    kinds = {n.terminal for n in tree.nodes}
    assert TerminalKind.ANSWER in kinds and TerminalKind.CODE_ERRORS in kinds
    assert any(n.grade is True for n in tree.nodes) and any(n.grade is False for n in tree.nodes)
    assert any(not n.exec_ok for n in tree.nodes) and any(n.output for n in tree.nodes)
    assert all(n.ppm_value is not None for n in tree.nodes[1:] if n.exec_ok)
    assert tree.best_trajectory() is not None and tree.best_trajectory().correct is True


def test_html_shows_every_field_of_every_node(tree: Tree) -> None:
    page = tree.to_html()
    assert page.startswith("<!DOCTYPE html>")
    for node in tree.nodes[1:]:
        assert f'data-id="{node.id}"' in page
        assert f"N={node.visits}" in page
        assert f"Q={node.q:+.3f}" in page
        assert node.ppm_value is not None or not node.exec_ok
        if node.ppm_value is not None:
            assert f"PPM={node.ppm_value:+.3f}" in page
    failed = next(n for n in tree.nodes if not n.exec_ok)
    assert "ZeroDivisionError: division by zero" in page
    assert failed.terminal is TerminalKind.CODE_ERRORS and "code_errors" in page
    assert "answer ✓ correct" in page and "answer ✗ wrong" in page
    assert '<pre class="rt-out">1</pre>' in page  # the output of print(x)
    assert html.escape(tree.question) in page and "reference <b>1</b>" in page


def test_best_trajectory_is_highlighted_and_open(tree: Tree) -> None:
    best = tree.best_trajectory()
    assert best is not None
    page = tree_to_html(tree, open_depth=0)
    for tag, attrs in parse_tags(page):
        if tag == "details" and "rt-node" in (attrs.get("class") or ""):
            on_best = int(attrs["data-id"] or -1) in {n.id for n in best.nodes}
            assert ("rt-best" in (attrs["class"] or "")) is on_best
            assert ("open" in attrs) is on_best
    assert page.count("★ best") == len(best)


def test_hostile_step_text_is_escaped(tree: Tree) -> None:
    for page in (tree.to_html(), tree._repr_html_(), tree_to_html(tree, max_text_chars=10)):
        tags = parse_tags(page)
        assert [t for t, _ in tags].count("script") == 1  # only our own
        assert not [t for t, _ in tags if t in ("img", "a", "iframe", "object", "embed")]
        for _tag, attrs in tags:
            assert not [k for k in attrs if k.startswith("on")]
            assert all("javascript:" not in (v or "") for v in attrs.values())
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
        assert "&lt;/pre&gt;&lt;/details&gt;" in page
    assert "&lt;b&gt;bold?&lt;/b&gt;" in tree._repr_html_()


def test_control_characters_and_surrogates_are_cleaned() -> None:
    tree = Tree("nul\x00 and \ud800 and \x1b[31m")
    tree.add_child(tree.root, text="a\x00b\x07c\n<end_of_step>", kind=StepKind.CODE)
    page = tree.to_html()
    page.encode("utf-8")  # no lone surrogate left
    assert "\x00" not in page and "\x1b" not in page and "\x07" not in page


def test_long_text_is_cut_with_a_show_more_toggle(tree: Tree) -> None:
    long_node = next(n for n in tree.nodes if "line 59" in n.text)
    page = tree_to_html(tree, max_text_chars=200)
    assert "more characters</summary>" in page
    body = page[page.index(f'data-id="{long_node.id}"') :]
    body = body[: body.index("rt-stats")]
    first = body.index("line 0 of")
    rest = body.index("show ")
    assert first < rest < body.index("line 59 of")  # the end is behind the toggle, not lost
    assert "more characters" not in tree_to_html(tree, max_text_chars=None)


def test_large_tree_is_capped_and_fast() -> None:
    tree = big_tree(6000)
    started = time.perf_counter()
    page = tree_to_html(tree)
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0
    drawn = page.count('class="rt-node')
    assert 1999 <= drawn <= 2000 + 16
    assert "showing" in page and "more child node(s) not drawn" in page
    # the best (deepest) node and its ancestors are always drawn
    best = tree.best_trajectory()
    assert best is not None and f'data-id="{best.last.id}"' in page
    assert page.count(" open>") == len(best)  # large tree: only the best path starts open
    assert tree_to_html(tree, max_nodes=None).count('class="rt-node') == len(tree) - 1


def test_select_nodes_keeps_ancestors() -> None:
    tree = big_tree(500, branching=3)
    keep = {tree.nodes[-1].id}
    chosen = select_nodes(tree, 50, keep)
    assert 50 <= len(chosen) <= 60 and keep <= chosen
    for node_id in chosen:
        parent = tree.nodes[node_id].parent
        assert parent is None or parent in chosen


def test_a_very_deep_tree_renders_without_recursion() -> None:
    tree = Tree("deep")
    node = tree.root
    for i in range(3000):
        node = tree.add_child(node, text=f"y = {i}\n<end_of_step>", kind=StepKind.CODE)
    page = tree_to_html(tree, max_nodes=None)
    assert page.count('<details class="rt-node') == 3000
    assert page.count("<ul") == page.count("</ul>") == 3000
    assert tree_to_dot(tree, max_nodes=None).count("->") == 3000


def test_empty_tree_and_options() -> None:
    tree = Tree("nothing yet")
    assert "the tree has no steps yet" in tree._repr_html_()
    assert "digraph" in tree.to_dot()
    with pytest.raises(ValueError, match="max_nodes"):
        tree_to_html(tree, max_nodes=0)


def test_to_html_writes_the_page(tree: Tree, tmp_path: Path) -> None:
    path = tmp_path / "tree.html"
    page = tree.to_html(path, title="my tree")
    assert path.read_text(encoding="utf-8") == page
    assert "<title>my tree</title>" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "http://" not in page and "https://" not in page  # nothing from the network


def test_two_fragments_have_distinct_ids(tree: Tree) -> None:
    ids = [
        a["id"]
        for page in (tree._repr_html_(), tree._repr_html_())
        for t, a in parse_tags(page)
        if t == "div" and a.get("class") == "rstar-tree"
    ]
    assert len(ids) == 2 and ids[0] != ids[1]


# --------------------------------------------------------------------------- DOT


def test_dot_escapes_labels_and_has_every_edge(tree: Tree) -> None:
    dot = tree.to_dot()
    assert dot.startswith("digraph rstar_tree {") and dot.rstrip().endswith("}")
    assert dot.count("->") == len(tree) - 1
    assert "\\\\boxed{1}" in dot  # a backslash in a label is doubled
    assert 'onerror=\\"window.__pwned = 2\\"' in dot
    for line in dot.splitlines()[4:-1]:
        # every statement is one line; quotes balance once escaped quotes are removed
        assert line.endswith(";"), line
        assert line.replace("\\\\", "").replace('\\"', "").count('"') % 2 == 0, line


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")
def test_dot_renders_with_graphviz(tree: Tree, tmp_path: Path) -> None:
    for dot in (tree.to_dot(), big_tree(300).to_dot(max_nodes=100), Tree("q \\").to_dot()):
        done = subprocess.run(
            ["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "<svg" in done.stdout and "Warning" not in done.stderr and "Error" not in done.stderr
    svg = subprocess.run(
        ["dot", "-Tsvg"], input=tree.to_dot(), capture_output=True, text=True, timeout=60
    ).stdout
    assert "\\boxed{1}" in svg and "&lt;script&gt;" in svg
    (tmp_path / "tree.svg").write_text(svg, encoding="utf-8")


# --------------------------------------------------------------------------- pretty()


def test_pretty_shows_steps_outputs_errors_and_outcome(tree: Tree) -> None:
    best = tree.best_trajectory()
    assert best is not None
    text = best.pretty()
    assert text.startswith("Question: Pick a number") and "Reference: 1" in text
    assert "[output] 1" in text and "=== answer: answer='1' grade=True value=+1.000" in text
    failed = next(n for n in tree.nodes if not n.exec_ok)
    err = tree.trajectory(failed).pretty()
    assert "ERROR=ZeroDivisionError" in err and "[error] ZeroDivisionError: division by zero" in err
    assert "=== code_errors" in err
    long_node = next(n for n in tree.nodes if "line 59" in n.text)
    cut = tree.trajectory(long_node).pretty(max_chars=50)
    assert "more characters]" in cut and "line 59" not in cut
    assert tree.trajectory(tree.root).pretty().endswith("=== open: no steps")


# --------------------------------------------------------------------------- headless Chromium

CHROMIUM_BINARIES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"


def _chromium() -> str | None:
    for path in CHROMIUM_BINARIES:
        if Path(path).is_file():
            return path
    return shutil.which("chromium")


def _missing(reason: str) -> None:
    """Skip, or fail where the browser is required (``RSTAR_REQUIRE_BROWSER=1``, as in CI)."""
    if os.environ.get("RSTAR_REQUIRE_BROWSER", "") not in ("", "0"):
        pytest.fail(f"RSTAR_REQUIRE_BROWSER is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Any:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[dev]')")
    binary = _chromium()
    driver_path = CHROMEDRIVER if Path(CHROMEDRIVER).is_file() else shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _missing("chromium / chromedriver are not installed (run .ci/install_browser.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium-manager never tries to download anything
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _errors(driver: Any) -> list[dict[str, Any]]:
    """Browser console entries at SEVERE (errors, CSP violations, failed loads)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _visible_bodies(driver: Any) -> int:
    """Node bodies the user can see: every enclosing ``<details>`` is open.

    (Chromium hides a closed ``<details>``' content with ``content-visibility``, so layout
    boxes alone do not tell; ``checkVisibility`` does, and agrees with the ancestor walk.)
    """
    return int(
        driver.execute_script(
            """
            const bodies = Array.from(document.querySelectorAll('details.rt-node > .rt-body'));
            const open = (e) => { for (let p = e.parentElement; p; p = p.parentElement) {
                if (p.tagName === 'DETAILS' && !p.open) return false; } return true; };
            const seen = bodies.filter(open);
            if (bodies.some((e) => open(e) !== e.checkVisibility())) return -1;
            return seen.length;
            """
        )
    )


@pytest.mark.browser
def test_page_loads_cleanly_expands_on_click_and_screenshots(
    browser: Any, tree: Tree, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    page = tmp_path / "tree.html"
    tree.to_html(page)
    browser.get_log("browser")  # drop anything from before
    browser.get(page.as_uri())
    assert browser.title.startswith("rStar-Math tree: Pick a number")
    assert _errors(browser) == []

    # the script ran under the page's CSP (it unhides the toolbar); the hostile step did not
    toolbar = browser.find_element(By.CSS_SELECTOR, ".rt-toolbar")
    assert toolbar.is_displayed()
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1
    assert "<script>window.__pwned = 1</script>" in browser.find_element(By.TAG_NAME, "body").text

    # a collapsed node opens on click and closes again
    closed = browser.find_elements(By.CSS_SELECTOR, "details.rt-node:not([open])")
    target = next(d for d in closed if d.find_element(By.TAG_NAME, "summary").is_displayed())
    body = target.find_element(By.CSS_SELECTOR, ":scope > .rt-body")
    assert not body.is_displayed()
    target.find_element(By.TAG_NAME, "summary").click()
    assert body.is_displayed() and target.get_attribute("open") is not None
    assert "N=" in target.find_element(By.TAG_NAME, "summary").text
    target.find_element(By.TAG_NAME, "summary").click()
    assert not body.is_displayed()

    # the toolbar: expand all / best path only / collapse all
    total = len(browser.find_elements(By.CSS_SELECTOR, "details.rt-node"))
    browser.find_element(By.CSS_SELECTOR, "button[data-act=expand]").click()
    assert _visible_bodies(browser) == total
    browser.find_element(By.CSS_SELECTOR, "button[data-act=best]").click()
    best = tree.best_trajectory()
    assert best is not None and _visible_bodies(browser) == len(best)
    browser.find_element(By.CSS_SELECTOR, "button[data-act=collapse]").click()
    assert _visible_bodies(browser) == 0
    browser.find_element(By.CSS_SELECTOR, "button[data-act=expand]").click()

    # "show more" on a long step reveals its end
    more = browser.find_element(By.CSS_SELECTOR, "details.rt-more")
    rest = more.find_element(By.TAG_NAME, "pre")
    assert not rest.is_displayed()
    more.find_element(By.TAG_NAME, "summary").click()
    assert rest.is_displayed() and "line 59" in rest.text

    # everything open, scrolled to the failed step and the hostile one
    failed = next(n for n in tree.nodes if not n.exec_ok)
    browser.execute_script(
        "document.querySelector(arguments[0]).scrollIntoView();", f'details[data-id="{failed.id}"]'
    )
    assert browser.save_screenshot(str(tmp_path / "tree_expanded.png"))

    # back to the initial view for the screenshot
    browser.get(page.as_uri())
    shot = tmp_path / "tree.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert _errors(browser) == []


@pytest.mark.browser
def test_notebook_fragments_work_side_by_side(browser: Any, tree: Tree, tmp_path: Path) -> None:
    """Two ``_repr_html_`` outputs in one document (as in a notebook) stay independent."""
    from selenium.webdriver.common.by import By

    small = solve_tree(num_rollouts=2)
    page = tmp_path / "notebook.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"</head><body>{tree._repr_html_()}<hr>{small._repr_html_()}</body></html>",
        encoding="utf-8",
    )
    browser.get_log("browser")
    browser.get(page.as_uri())
    assert _errors(browser) == []
    views = browser.find_elements(By.CSS_SELECTOR, ".rstar-tree")
    assert len(views) == 2 and all(
        v.find_element(By.CSS_SELECTOR, ".rt-toolbar").is_displayed() for v in views
    )
    views[1].find_element(By.CSS_SELECTOR, "button[data-act=collapse]").click()
    first_open = views[0].find_elements(By.CSS_SELECTOR, "details.rt-node[open]")
    assert first_open and not views[1].find_elements(By.CSS_SELECTOR, "details.rt-node[open]")
    assert browser.execute_script("return window.__pwned === undefined")


@pytest.mark.browser
def test_large_tree_page_loads_quickly(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    tree = big_tree(5000)
    page = tmp_path / "big.html"
    tree.to_html(page)
    browser.get_log("browser")
    started = time.perf_counter()
    browser.get(page.as_uri())
    load_s = time.perf_counter() - started
    assert _errors(browser) == []
    assert load_s < 15.0
    nodes = browser.find_elements(By.CSS_SELECTOR, "details.rt-node")
    assert 1999 <= len(nodes) <= 2016  # max_nodes=2000 counts the root
    started = time.perf_counter()
    browser.find_element(By.CSS_SELECTOR, "button[data-act=expand]").click()
    assert _visible_bodies(browser) == len(nodes)
    assert time.perf_counter() - started < 15.0
