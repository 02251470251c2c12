"""Slash-command text as people type it and Slack delivers it, made into plain tokens.

Called by the grammar (``handlers.grammar``) before it reads a command.  Slack linkifies
addresses (``<mailto:a@b.com|a@b.com>``) and escapes ``&``, ``<`` and ``>``; keyboards add
smart quotes and turn ``--`` into a dash; pasted text carries zero-width characters.
Undoing all that here keeps the grammar about the command itself.
"""

from __future__ import annotations

import re

_MAILTO = re.compile(r"<mailto:([^|>\s]*)(?:\|[^>]*)?>")
# Zero-width characters make a valid name look invalid while it looks right on screen.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
# Straight, typographic ("smart") and code quotes that people put around values; code
# quotes because the help text shows examples in backticks and people paste them.
_QUOTES = "\"'`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u00ab\u00bb\u2039\u203a"
# What smart punctuation (macOS, iOS) makes of a typed "--".
_DASHES = ("\u2014", "\u2013")


def unquote(token: str) -> str:
    """``token`` without the quotes around it, if any (both ends must be quotes, so an
    address such as ``o'neil@example.com`` keeps its apostrophe)."""
    while len(token) >= 2 and token[0] in _QUOTES and token[-1] in _QUOTES:
        token = token[1:-1]
    return token


def tokens(text: str) -> list[str]:
    """The words of ``text``, split at any whitespace, unquoted, with dashes made ``--``."""
    text = _MAILTO.sub(lambda match: match.group(1), text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    words = []
    for raw in text.translate(_INVISIBLE).split():
        word = unquote(raw)
        if word.startswith(_DASHES):
            word = "--" + word[1:]
        if word:
            words.append(word)
    return words
