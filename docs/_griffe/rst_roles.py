"""Griffe extension for the API reference: the docstrings' reST roles become cross-references.

The library's docstrings use reST roles (``:class:`~rstar_math.tree.Tree```, ``:meth:`close```)
inside otherwise Markdown-friendly text. Griffe's Google-style parser leaves roles as they are,
so this extension rewrites each one, once the whole package is loaded, into an *optional*
mkdocs-autorefs reference: a link when the target is documented somewhere in the site, plain code
otherwise (never a build warning). Targets are resolved like Sphinx does: a dotted path as
written, else relative to the object that holds the docstring, then to its parents.

Two more bits of reST become Markdown: a trailing literal-block marker (``text::``) becomes a plain
colon, and a reST definition-list entry (a short unindented term line after a blank line, followed
by a block indented by four spaces) becomes a bold term followed by its dedented paragraph.

A Google-style entry that documents several parameters at once (``a, b: shared text`` under
``Args:``) is split into one entry per name, since griffe would otherwise look for a parameter
literally named ``a, b``.

Roles that name an object of the package (a dotted ``rstar_math...`` path, or a bare name) but
resolve nowhere are logged at INFO level under ``mkdocs.plugins.rst_roles`` (``mkdocs build``
shows them): they point at something that does not exist (a typo or a rename). Unresolved
references outside the package (the standard library) are logged at DEBUG level.
"""

from __future__ import annotations

import builtins
import html
import logging
import re
import sys
from typing import Any

import griffe

_LOG = logging.getLogger("mkdocs.plugins.rst_roles")

_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|func|meth|data|mod|attr|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`<>]+)`"
)
_LITERAL_BLOCK = re.compile(r"(?<=\S)::[ \t]*$", re.MULTILINE)


class RstRoles(griffe.Extension):
    """Rewrite reST roles in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            docstring = obj.docstring
            if docstring is None:
                continue
            text = _split_grouped_params(self._rewrite(docstring.value, obj, pkg))
            text = _definition_lists(text)
            docstring.value = _LITERAL_BLOCK.sub(":", text)

    def _rewrite(self, text: str, obj: griffe.Object, pkg: griffe.Module) -> str:
        def replace(match: re.Match[str]) -> str:
            target = match["target"].strip().removesuffix("()")
            shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
            path = _resolve(target, obj, pkg)
            code = f"<code>{html.escape(shown)}</code>"
            if path is None:
                head = target.split(".", 1)[0]
                ours = head == pkg.name or (
                    "." not in target
                    and head not in sys.stdlib_module_names
                    and not hasattr(builtins, head)
                )
                _LOG.log(
                    logging.INFO if ours else logging.DEBUG,
                    "%s: unresolved reference %s",
                    obj.path,
                    match.group(0),
                )
                return code
            return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

        return _ROLE.sub(replace, text)


_SECTION = re.compile(r"(Args|Arguments|Parameters|Params|Attributes|Other Parameters):\s*$")
_GROUPED = re.compile(r"    (?P<names>[*\w]+(?:\s*,\s*[*\w]+)+)\s*:(?P<rest>.*)$")


def _split_grouped_params(text: str) -> str:
    """``a, b: text`` in a Google-style parameter section -> one ``a:`` and one ``b:`` entry."""
    lines = text.split("\n")
    out: list[str] = []
    in_section = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _SECTION.fullmatch(line):
            in_section = True
        elif line and not line[0].isspace():
            in_section = False
        match = _GROUPED.fullmatch(line) if in_section else None
        if match is None:
            out.append(line)
            i += 1
            continue
        body = []
        i += 1
        while i < len(lines) and lines[i].startswith("        "):
            body.append(lines[i])
            i += 1
        for name in re.split(r"\s*,\s*", match["names"]):
            out.append(f"    {name}:{match['rest']}")
            out.extend(body)
    return "\n".join(out)


_LIST_ITEM = re.compile(r"([*+-]|\d+\.)\s")


def _definition_lists(text: str) -> str:
    """``Term`` + an indented block (reST definition list) -> ``**Term**`` + the block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        is_term = (
            i > 0
            and i + 1 < len(lines)
            and line
            and not line[0].isspace()
            and not line.rstrip().endswith(":")
            and len(line) <= 60
            and not _LIST_ITEM.match(line)
            and not lines[i - 1].strip()
            and lines[i + 1].startswith("    ")
            and lines[i + 1].strip()
        )
        if not is_term:
            out.append(line)
            i += 1
            continue
        out.extend([f"**{line.strip()}**", ""])
        i += 1
        while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
            if not lines[i].strip() and (i + 1 >= len(lines) or not lines[i + 1].startswith(" ")):
                break
            out.append(lines[i][4:])
            i += 1
    return "\n".join(out)


def _walk(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield from _walk(member)  # type: ignore[arg-type]


def _lookup(root: griffe.Object, dotted: str) -> str | None:
    """The canonical path of ``dotted`` under ``root`` (aliases followed), or None."""
    try:
        found = root[dotted] if dotted else root
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    try:
        return found.final_target.path if found.is_alias else found.path  # type: ignore[union-attr]
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _resolve(target: str, obj: griffe.Object, pkg: griffe.Module) -> str | None:
    top = pkg.name
    if target == top or target.startswith(top + "."):
        return _lookup(pkg, target[len(top) + 1 :])
    scope: griffe.Object | None = obj
    while scope is not None:
        path = _lookup(scope, target)
        if path is not None:
            return path
        scope = scope.parent
    return None
