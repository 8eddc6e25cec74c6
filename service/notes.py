"""A study's notes, Markdown rendered to HTML that is safe to put in a page.

CommonMark with raw HTML off: a ``<script>`` or any other tag in the notes is shown as the
text it is, and markdown-it's link check drops ``javascript:``, ``vbscript:``, ``file:``
and non-image ``data:`` URLs. Tables and strikethrough are on; links open with
``rel="nofollow noopener"``. The page's Content-Security-Policy forbids inline scripts
besides.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup


@cache
def _renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])

    def link_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        tokens[idx].attrSet("rel", "nofollow noopener")
        return str(self.renderToken(tokens, idx, options, env))

    md.add_render_rule("link_open", link_open)
    return md


def render_notes(text: str | None) -> Markup:
    """The notes as HTML ('' for none)."""
    if not text:
        return Markup("")
    return Markup(_renderer().render(text))
