"""Views of a search tree: a self-contained interactive HTML page and Graphviz DOT.

:func:`tree_to_html` (``Tree._repr_html_`` in Jupyter, ``Tree.to_html`` for a file) renders every
node as a collapsible ``<details>`` element: a one-line summary (kind, N, Q, PPM value, terminal
kind, grade, the step's first line) that opens onto the step's text, its Python, what it printed or
how it failed, and its children (most visited first). The best trajectory
(:meth:`~rstar_math.tree.Tree.best_trajectory`) is highlighted and open.

The output needs nothing from the network: CSS and the small script are inline, and collapsing and
"show more" work with plain HTML (the script only adds the expand / collapse / best-path buttons,
so a notebook that does not run output scripts still shows a working tree). Every piece of text is
HTML-escaped: step text is model output and is treated as hostile. A full page (``full_page=True``)
also carries a Content-Security-Policy that blocks all network access and allows only its own
script (by hash).

Large trees stay usable: only the first ``open_depth`` levels and the best path start open, each
text is cut to ``max_text_chars`` with the rest behind a "show more" toggle, and beyond
``max_nodes`` nodes only the most visited ones (and their ancestors) are drawn.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rstar_math.tree import Node, Tree

__all__ = ["select_nodes", "tree_to_dot", "tree_to_html"]

#: Defaults shared by ``Tree._repr_html_`` and ``Tree.to_html``.
DEFAULT_MAX_NODES = 2000
DEFAULT_MAX_TEXT_CHARS = 600
#: Trees up to this many nodes start with their first level expanded.
SMALL_TREE = 200

_MARKER_RE = re.compile(
    r"<(?:/?code|end_of_step|end_of_code|answer|end_of_answer|output|end_of_output)>"
)
# C0 controls except tab / newline / carriage return, DEL, C1 controls, lone surrogates.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_uid = itertools.count()


# --------------------------------------------------------------------------- shared helpers


def _clean(text: object) -> str:
    """``str(text)`` without control characters and lone surrogates (unencodable in UTF-8)."""
    return _CONTROL_RE.sub("\ufffd", "" if text is None else str(text))


def _esc(text: object) -> str:
    return html.escape(_clean(text), quote=True)


def _num(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _preview(node: Node, width: int = 90) -> str:
    """The step's first meaningful line, markers stripped."""
    for line in _MARKER_RE.sub("", node.text).splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line if len(line) <= width else line[: width - 1] + "…"
    return ""


def _best_ids(tree: Tree) -> set[int]:
    best = tree.best_trajectory()
    return {n.id for n in best.nodes} if best is not None else set()


def select_nodes(tree: Tree, max_nodes: int | None, keep: Iterable[int] = ()) -> set[int]:
    """Ids of the nodes to draw: all of them, or at most about ``max_nodes``.

    The root, the ``keep`` ids (the best path) and their ancestors always stay; then the most
    visited nodes (shallower first among equals) are added with their ancestors, so every drawn
    node's parent is drawn too.
    """
    nodes = tree.nodes
    if max_nodes is None or len(nodes) <= max_nodes:
        return {n.id for n in nodes}
    chosen: set[int] = set()

    def add(node_id: int) -> None:
        while node_id not in chosen:
            chosen.add(node_id)
            parent = nodes[node_id].parent
            if parent is None:
                break
            node_id = parent

    add(0)
    for node_id in keep:
        add(node_id)
    for node in sorted(nodes, key=lambda n: (-n.visits, n.depth, n.id)):
        if len(chosen) >= max_nodes:
            break
        add(node.id)
    return chosen


def _ordered_children(tree: Tree, node: Node) -> list[Node]:
    """Children, most visited first (creation order among equals)."""
    return sorted(tree.children(node), key=lambda c: (-c.visits, c.id))


# --------------------------------------------------------------------------- HTML

_CSS = """
div.rstar-tree{--rt-fg:#1f2328;--rt-muted:#656d76;--rt-bg:#fff;--rt-soft:#f6f8fa;--rt-line:#d0d7de;
--rt-best:#d4a72c;--rt-ok:#1a7f37;--rt-bad:#cf222e;--rt-info:#0969da;--rt-warn:#9a6700;
color:var(--rt-fg);background:var(--rt-bg);font:13px/1.45 -apple-system,BlinkMacSystemFont,
"Segoe UI",Helvetica,Arial,sans-serif;border:1px solid var(--rt-line);border-radius:6px;
padding:10px 12px;max-width:100%;box-sizing:border-box;text-align:left}
div.rstar-tree *{box-sizing:border-box}
div.rstar-tree .rt-q{font-size:14px;margin:0 0 4px;white-space:pre-wrap;overflow-wrap:anywhere}
div.rstar-tree .rt-meta{color:var(--rt-muted);margin:0 0 6px}
div.rstar-tree .rt-meta b{color:var(--rt-fg)}
div.rstar-tree .rt-treeerr{color:var(--rt-bad);white-space:pre-wrap}
div.rstar-tree .rt-toolbar{margin:4px 0 8px}
div.rstar-tree .rt-toolbar button{font:inherit;font-size:12px;padding:2px 8px;margin-right:4px;
border:1px solid var(--rt-line);border-radius:4px;background:var(--rt-soft);color:var(--rt-fg);
cursor:pointer}
div.rstar-tree .rt-toolbar button:hover{background:#eaeef2}
div.rstar-tree ul.rt-ul{list-style:none;margin:0;padding:0 0 0 16px;
border-left:1px dotted var(--rt-line)}
div.rstar-tree ul.rt-ul.rt-top{padding-left:0;border-left:none}
div.rstar-tree li.rt-li{margin:2px 0}
div.rstar-tree details.rt-node>summary{cursor:pointer;padding:2px 4px;border-radius:4px;
white-space:nowrap;overflow:hidden;text-overflow:ellipsis;list-style-position:inside}
div.rstar-tree details.rt-node>summary:hover{background:var(--rt-soft)}
div.rstar-tree details.rt-best>summary{background:#fff8c5;box-shadow:inset 3px 0 0 var(--rt-best)}
div.rstar-tree .rt-body{margin:2px 0 4px 18px;padding:4px 8px;border-left:3px solid var(--rt-line)}
div.rstar-tree details.rt-best>.rt-body{border-left-color:var(--rt-best)}
div.rstar-tree .rt-b{display:inline-block;font-size:11px;line-height:16px;padding:0 5px;
border-radius:8px;margin-right:4px;background:var(--rt-soft);border:1px solid var(--rt-line);
color:var(--rt-muted);vertical-align:1px}
div.rstar-tree .rt-b.k-answer{color:var(--rt-info);border-color:#b6e3ff}
div.rstar-tree .rt-b.k-final_code{color:#8250df;border-color:#d8b9ff}
div.rstar-tree .rt-b.k-invalid,div.rstar-tree .rt-b.err{color:var(--rt-bad);border-color:#ffcecb}
div.rstar-tree .rt-b.t-ok{color:#fff;background:var(--rt-ok);border-color:var(--rt-ok)}
div.rstar-tree .rt-b.t-bad{color:#fff;background:var(--rt-bad);border-color:var(--rt-bad)}
div.rstar-tree .rt-b.t-open{color:#fff;background:var(--rt-info);border-color:var(--rt-info)}
div.rstar-tree .rt-b.t-fail{color:var(--rt-warn);border-color:#f5d78e;background:#fff8c5}
div.rstar-tree .rt-b.star{color:#7d4e00;background:#fff8c5;border-color:var(--rt-best)}
div.rstar-tree .rt-s{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
font-size:12px;margin-right:6px}
div.rstar-tree .rt-s.pos{color:var(--rt-ok)}
div.rstar-tree .rt-s.neg{color:var(--rt-bad)}
div.rstar-tree .rt-p{color:var(--rt-muted)}
div.rstar-tree pre{margin:2px 0;padding:4px 6px;background:var(--rt-soft);border-radius:4px;
font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;
overflow-wrap:anywhere;max-height:none}
div.rstar-tree .rt-label{font-size:11px;color:var(--rt-muted);text-transform:uppercase;
letter-spacing:.04em;margin-top:4px}
div.rstar-tree pre.rt-out{background:#f0f7ff}
div.rstar-tree pre.rt-err{background:#fff0ee;color:var(--rt-bad)}
div.rstar-tree .rt-c{color:#6e7781}
div.rstar-tree .rt-m{color:#8250df}
div.rstar-tree details.rt-more>summary{cursor:pointer;color:var(--rt-info);font-size:12px}
div.rstar-tree .rt-stats{color:var(--rt-muted);font-size:12px}
div.rstar-tree .rt-hidden{color:var(--rt-muted);font-style:italic;font-size:12px}
""".strip()

# Selectors start with ``div.rstar-tree`` (and lists carry classes) so that they outrank notebook
# front-ends' own rules for rendered HTML (e.g. JupyterLab's ``.jp-RenderedHTMLCommon ul``).
# Progressive enhancement only: the tree works without it. No inline handlers (a full page's CSP
# allows this script by hash and nothing else).
_JS = """
(function(){
var root=document.getElementById("__ID__");
if(!root){return;}
var bar=root.querySelector(".rt-toolbar");
if(!bar){return;}
bar.hidden=false;
function nodes(){return root.querySelectorAll("details.rt-node");}
function act(name){
var all=nodes(),i;
if(name==="expand"){for(i=0;i<all.length;i++){all[i].open=true;}}
else if(name==="collapse"){for(i=0;i<all.length;i++){all[i].open=false;}}
else if(name==="best"){
for(i=0;i<all.length;i++){all[i].open=all[i].classList.contains("rt-best");}
var best=root.querySelectorAll("details.rt-best");
if(best.length){best[best.length-1].scrollIntoView({block:"nearest"});}
}
}
bar.addEventListener("click",function(ev){
var b=ev.target.closest("button[data-act]");
if(b){act(b.getAttribute("data-act"));}
});
})();
""".strip()


def _code_html(text: str) -> str:
    """Escaped step text with comment lines and format markers dimmed."""
    out = []
    for line in _clean(text).split("\n"):
        stripped = line.lstrip()
        if stripped.startswith("#"):
            out.append(f'<span class="rt-c">{html.escape(line)}</span>')
            continue
        pieces, last = [], 0
        for m in _MARKER_RE.finditer(line):
            pieces.append(html.escape(line[last : m.start()]))
            pieces.append(f'<span class="rt-m">{html.escape(m.group())}</span>')
            last = m.end()
        pieces.append(html.escape(line[last:]))
        out.append("".join(pieces))
    return "\n".join(out)


def _capped_pre(text: str, max_chars: int | None, cls: str = "", code: bool = False) -> str:
    """``<pre>`` of ``text``; beyond ``max_chars`` the rest is behind a "show more" toggle."""
    text = _clean(text).rstrip("\n")
    attr = f' class="{cls}"' if cls else ""
    render = _code_html if code else html.escape
    if max_chars is None or len(text) <= max_chars:
        return f"<pre{attr}>{render(text)}</pre>"
    # cut at a line break near the limit when there is one
    cut = text.rfind("\n", max_chars // 2, max_chars)
    cut = cut + 1 if cut != -1 else max_chars
    head, rest = text[:cut], text[cut:]
    return (
        f"<pre{attr}>{render(head)}</pre>"
        f'<details class="rt-more"><summary>show {len(rest)} more characters</summary>'
        f"<pre{attr}>{render(rest)}</pre></details>"
    )


def _summary(node: Node, best: bool) -> str:
    parts = []
    if best:
        parts.append('<span class="rt-b star" title="on the best trajectory">★ best</span>')
    parts.append(f'<span class="rt-b k-{_esc(node.kind.value)}">{_esc(node.kind.value)}</span>')
    if not node.exec_ok:
        parts.append(f'<span class="rt-b err">{_esc(node.error_type or "error")}</span>')
    if node.terminal is not None:
        kind = node.terminal.value
        if node.grade is True:
            cls, label = "t-ok", f"{kind} ✓ correct"
        elif node.grade is False:
            cls, label = "t-bad", f"{kind} ✗ wrong"
        elif kind == "answer":
            cls, label = "t-open", kind
        else:
            cls, label = "t-fail", kind
        parts.append(f'<span class="rt-b {cls}">{_esc(label)}</span>')
    if node.duplicates:
        parts.append(
            f'<span class="rt-b" title="identical samples merged">×{node.duplicates + 1}</span>'
        )
    q_cls = "pos" if node.visits and node.q > 0 else "neg" if node.visits and node.q < 0 else ""
    parts.append(f'<span class="rt-s">N={node.visits}</span>')
    parts.append(f'<span class="rt-s {q_cls}">Q={_num(node.q)}</span>')
    if node.ppm_value is not None:
        parts.append(f'<span class="rt-s">PPM={_num(node.ppm_value)}</span>')
    if node.answer is not None:
        parts.append(f'<span class="rt-s">answer={_esc(node.answer)}</span>')
    parts.append(f'<span class="rt-p">{_esc(_preview(node))}</span>')
    return "".join(parts)


def _body(node: Node, max_chars: int | None) -> str:
    parts = [_capped_pre(node.text, max_chars, "rt-text", code=True)]
    code = _clean(node.code).strip()
    if code and code not in _clean(node.text):
        parts.append('<div class="rt-label">code</div>')
        parts.append(_capped_pre(node.code, max_chars, "rt-code", code=True))
    if node.output:
        parts.append('<div class="rt-label">output</div>')
        parts.append(_capped_pre(node.output, max_chars, "rt-out"))
    if not node.exec_ok:
        err = f"{node.error_type or 'Error'}: {node.error_message or ''}".rstrip(": ")
        parts.append('<div class="rt-label">error</div>')
        parts.append(_capped_pre(err, max_chars, "rt-err"))
    stats = [
        f"id {node.id}",
        f"depth {node.depth}",
        f"N {node.visits}",
        f"Q {_num(node.q)}",
        f"value sum {_num(node.value_sum)}",
        f"PPM {_num(node.ppm_value)}",
        f"tokens {node.tokens}",
    ]
    if node.stop:
        stats.append(f"stop {node.stop}")
    if node.terminal is not None:
        stats.append(f"terminal {node.terminal.value} (value {_num(node.terminal_value)})")
    if node.grade is not None:
        stats.append("grade correct" if node.grade else "grade wrong")
    if node.consecutive_errors:
        stats.append(f"consecutive errors {node.consecutive_errors}")
    parts.append(f'<div class="rt-stats">{_esc(" · ".join(stats))}</div>')
    return "".join(parts)


def _render_children(
    tree: Tree,
    parent: Node,
    shown: set[int],
    best: set[int],
    open_depth: int,
    max_chars: int | None,
    out: list[str],
    top: bool = False,
) -> None:
    """Append the ``<ul>`` of ``parent``'s drawn children (iteratively: trees can be deep)."""
    # stack items: ("list", node) opens the <ul> of node's children, ("node", node) renders one
    # node and schedules its list; plain strings are closing tags, emitted as they are popped
    stack: list[tuple[str, Node] | str] = [("list", parent)]
    first = top
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        what, node = item
        if what == "list":
            children = _ordered_children(tree, node)
            drawn = [c for c in children if c.id in shown]
            hidden = len(children) - len(drawn)
            if not drawn and not hidden:
                continue
            out.append('<ul class="rt-ul rt-top">' if first else '<ul class="rt-ul">')
            first = False
            tail = ["</ul>"]
            if hidden:
                tail.insert(
                    0,
                    f'<li class="rt-li rt-hidden">{hidden} more child node(s) not drawn '
                    "(raise max_nodes to see them)</li>",
                )
            stack.extend(reversed(tail))
            stack.extend(("node", c) for c in reversed(drawn))
            continue
        on_best = node.id in best
        is_open = on_best or node.depth <= open_depth
        classes = "rt-node rt-best" if on_best else "rt-node"
        opened = " open" if is_open else ""
        out.append(
            f'<li class="rt-li"><details class="{classes}" data-id="{node.id}" '
            f'data-depth="{node.depth}"{opened}><summary>{_summary(node, on_best)}</summary>'
            f'<div class="rt-body">{_body(node, max_chars)}'
        )
        stack.append("</div></details></li>")
        stack.append(("list", node))


def tree_to_html(
    tree: Tree,
    *,
    full_page: bool = False,
    max_nodes: int | None = DEFAULT_MAX_NODES,
    max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS,
    open_depth: int | None = None,
    title: str | None = None,
) -> str:
    """Render ``tree`` as self-contained interactive HTML.

    Args:
        full_page: a complete HTML document (with a strict Content-Security-Policy) instead of a
            fragment for embedding (Jupyter).
        max_nodes: draw at most about this many nodes (the most visited, plus the best path and
            every drawn node's ancestors); ``None`` draws all.
        max_text_chars: longer texts show this many characters and a "show more" toggle;
            ``None`` never cuts.
        open_depth: nodes at depth ``<= open_depth`` start expanded; the best path always does.
            Default: 1 for trees of at most ``SMALL_TREE`` nodes, else 0 (only the best path).
        title: the page title (``full_page`` only).
    """
    if max_nodes is not None and max_nodes < 1:
        raise ValueError(f"max_nodes must be >= 1 or None, got {max_nodes}")
    if max_text_chars is not None and max_text_chars < 1:
        raise ValueError(f"max_text_chars must be >= 1 or None, got {max_text_chars}")
    if open_depth is None:
        open_depth = 1 if len(tree.nodes) <= SMALL_TREE else 0
    best_traj = tree.best_trajectory()
    best = {n.id for n in best_traj.nodes} if best_traj is not None else set()
    shown = select_nodes(tree, max_nodes, best)
    uid = f"rstar-tree-{next(_uid)}-{id(tree) & 0xFFFFFF:x}"

    terminals = tree.terminals()
    answered = [n for n in terminals if n.terminal is not None and n.terminal.value == "answer"]
    correct = sum(1 for n in answered if n.grade is True)
    meta = [f"<b>{len(tree.nodes)}</b> nodes", f"<b>{len(terminals)}</b> terminals"]
    graded = any(n.grade is not None for n in answered)
    meta.append(
        f"<b>{len(answered)}</b> answers" + (f" (<b>{correct}</b> correct)" if graded else "")
    )
    meta.append(f"root N={tree.root.visits} Q={_num(tree.root.q)}")
    if tree.reference is not None:
        meta.append(f"reference <b>{_esc(tree.reference)}</b>")
    if best_traj is not None:
        verdict = "" if best_traj.correct is None else " ✓" if best_traj.correct else " ✗"
        meta.append(
            f"best answer <b>{_esc(best_traj.answer)}</b>{verdict} "
            f"(value {_num(best_traj.value)}, {len(best_traj)} steps)"
        )
    algorithm = tree.meta.get("algorithm")
    if algorithm:
        meta.append(f"algorithm {_esc(algorithm)}")
    if len(shown) < len(tree.nodes):
        meta.append(f"showing {len(shown)} of {len(tree.nodes)} nodes")

    out: list[str] = [
        f'<div class="rstar-tree" id="{uid}">',
        f"<style>{_CSS}</style>",
        f'<div class="rt-q"><b>Question:</b> {_esc(tree.question)}</div>',
        f'<div class="rt-meta">{" · ".join(meta)}</div>',
    ]
    if "error" in tree.meta:
        out.append(f'<div class="rt-treeerr">search error: {_esc(tree.meta["error"])}</div>')
    out.append(
        '<div class="rt-toolbar" hidden>'
        '<button type="button" data-act="expand">expand all</button>'
        '<button type="button" data-act="collapse">collapse all</button>'
        '<button type="button" data-act="best">best path only</button></div>'
    )
    if tree.root.children:
        _render_children(tree, tree.root, shown, best, open_depth, max_text_chars, out, top=True)
    else:
        out.append('<div class="rt-hidden">the tree has no steps yet</div>')
    out.append("</div>")
    script = _JS.replace("__ID__", uid)
    out.append(f"<script>{script}</script>")
    fragment = "".join(out)
    if not full_page:
        return fragment
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; img-src data:; base-uri 'none'; form-action 'none'"
    )
    page_title = _esc(title if title is not None else f"rStar-Math tree: {tree.question[:80]}")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{page_title}</title>"
        "<style>body{margin:16px;background:#fff}</style></head>\n"
        f"<body>{fragment}</body></html>\n"
    )


# --------------------------------------------------------------------------- DOT


def _dot_escape(text: str) -> str:
    """Text for a double-quoted DOT label: backslashes and quotes escaped, lines left-aligned."""
    text = _clean(text).replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return "".join(line + "\\l" for line in text.split("\n"))


def _dot_quote(text: str) -> str:
    text = _clean(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    return f'"{text}"'


def _label_text(node: Node, max_lines: int, width: int) -> str:
    lines = []
    for line in _MARKER_RE.sub("", node.text).strip("\n").split("\n"):
        if len(lines) == max_lines:
            lines.append("…")
            break
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    return "\n".join(lines)


def tree_to_dot(
    tree: Tree,
    *,
    max_nodes: int | None = DEFAULT_MAX_NODES,
    max_label_lines: int = 8,
    label_width: int = 60,
) -> str:
    """Render ``tree`` as a Graphviz ``digraph`` (``dot -Tsvg tree.dot -o tree.svg``).

    Each node's box shows its kind, N, Q, PPM value, terminal kind and grade, and the first
    ``max_label_lines`` lines of its step (markers stripped). The best trajectory is drawn in
    gold; correct answers green, wrong ones red, failed code dashed.
    """
    if max_label_lines < 1 or label_width < 2:
        raise ValueError("max_label_lines must be >= 1 and label_width >= 2")
    best = _best_ids(tree)
    shown = select_nodes(tree, max_nodes, best)
    question = tree.question if len(tree.question) <= 120 else tree.question[:119] + "…"
    lines = [
        "digraph rstar_tree {",
        f"  graph [rankdir=TB, labelloc=t, fontname=Helvetica, label={_dot_quote(question)}];",
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", color="#8c959f", '
        "fontname=Courier, fontsize=10];",
        '  edge [color="#8c959f", arrowsize=0.6];',
    ]
    for node in tree.nodes:
        if node.id not in shown:
            continue
        if node.parent is None:
            head = f"root  N={node.visits} Q={_num(node.q)}"
            attrs = [f'label="{_dot_escape(head)}"', 'fillcolor="#eaeef2"']
        else:
            head = f"#{node.id} {node.kind.value}  N={node.visits} Q={_num(node.q)}"
            if node.ppm_value is not None:
                head += f" PPM={_num(node.ppm_value)}"
            status = []
            if not node.exec_ok:
                status.append(f"error: {node.error_type or 'Error'}")
            if node.terminal is not None:
                status.append(f"terminal: {node.terminal.value}")
            if node.answer is not None:
                status.append(f"answer: {node.answer}")
            if node.grade is not None:
                status.append("correct" if node.grade else "wrong")
            label = head + ("\n" + ", ".join(status) if status else "")
            label += "\n" + _label_text(node, max_label_lines, label_width)
            attrs = [f'label="{_dot_escape(label)}"']
            if node.grade is True:
                attrs.append('fillcolor="#dafbe1"')
            elif node.grade is False:
                attrs.append('fillcolor="#ffebe9"')
            elif node.terminal is not None and node.terminal.value != "answer":
                attrs.append('fillcolor="#fff8c5"')
            if not node.exec_ok:
                attrs.append('style="rounded,filled,dashed"')
            if node.id in best:
                attrs.append('color="#d4a72c", penwidth=3')
        lines.append(f"  n{node.id} [{', '.join(attrs)}];")
    for node in tree.nodes:
        if node.id in shown and node.parent is not None:
            style = ' [color="#d4a72c", penwidth=3]' if node.id in best else ""
            lines.append(f"  n{node.parent} -> n{node.id}{style};")
    hidden = len(tree.nodes) - len(shown)
    if hidden:
        note = f"{hidden} more nodes not drawn (raise max_nodes)"
        lines.append(f'  hidden_note [shape=plaintext, style="", label={_dot_quote(note)}];')
    lines.append("}")
    return "\n".join(lines) + "\n"
