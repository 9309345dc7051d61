"""A griffe extension: render the package's reST-flavoured docstrings as Markdown.

The docstrings use Google-style sections (read by mkdocstrings) with two reST
habits that Markdown does not know:

* roles such as :class:`~idme_passback.RateLimiter` become inline code
  (`RateLimiter`); no cross-reference is made, so a moved module never breaks
  the build;
* literal blocks introduced by ``::`` become fenced code blocks (Python when
  the block parses as Python, plain text otherwise).

Loaded by mkdocstrings through ``extensions:`` in mkdocs.yml; the docs build
is the only user, and the package itself does not depend on it.
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|meth|func|mod|attr|data|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`]+)`"
)
_FENCE = re.compile(r"^\s*(```|~~~)")


def _role(match: re.Match[str]) -> str:
    target = match["target"].strip()
    if match["tilde"]:
        target = target.rsplit(".", 1)[-1]
    if match["role"] in ("meth", "func") and not target.endswith(")"):
        target += "()"
    return f"`{target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _language(block: str) -> str:
    if block.lstrip().startswith(">>>"):
        return "pycon"
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    try:
        compile(block, "<docstring>", "exec", flags=flags)
    except SyntaxError:
        return "text"
    return "python"


def _literal_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    in_fence = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            in_fence = not in_fence
        stripped = line.rstrip()
        if in_fence or not stripped.endswith("::"):
            out.append(line)
            i += 1
            continue
        base = _indent(line)
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j == len(lines) or _indent(lines[j]) <= base:
            out.append(line)
            i += 1
            continue
        k = j
        while k < len(lines) and (not lines[k].strip() or _indent(lines[k]) > base):
            k += 1
        body = lines[j:k]
        while body and not body[-1].strip():
            body.pop()
        code = textwrap.dedent("\n".join(body))
        intro = stripped[:-2]
        if intro.strip():
            # reST: "Text::" shows "Text:", "Text ::" shows "Text".
            out.append(intro.rstrip() if intro.endswith(" ") else intro + ":")
            out.append("")
        pad = " " * base
        out.append(f"{pad}```{_language(code)}")
        out.extend(pad + row if row else "" for row in code.splitlines())
        out.append(f"{pad}```")
        out.append("")
        i = k
    return "\n".join(out)


def to_markdown(text: str) -> str:
    """Return ``text`` with reST roles and literal blocks turned into Markdown."""
    return _literal_blocks(_ROLE.sub(_role, text))


class RstMarkup(griffe.Extension):
    """Rewrite every docstring with :func:`to_markdown` once the tree is built."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
