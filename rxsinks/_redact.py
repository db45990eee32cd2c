"""Redaction of URLs: the one place that decides what of a URL may leave the process.

Every URL rxsinks shows -- in a log line, an error message, a dead letter's error, ``/debug/vars``,
``rxsinks check-config``, a CLI message -- goes through :func:`redact_url` first, or through
:func:`redact_text` when it is part of a longer text. What is hidden:

* the user info (``https://TOKEN@host``, ``redis://:PASSWORD@host``): replaced by ``***``, user
  name and password alike, because both carry credentials in practice;
* every query value (``?api_key=...&region=...``): the names stay, so a person still sees which
  parameters were sent; a parameter without ``=`` is hidden whole;
* a fragment.

Scheme, host, port and path stay: they are what a person needs to find the endpoint. The
functions work on the text, so a URL too malformed to parse (a bad port, a missing ``//``) is
redacted all the same: a configuration error must never print the password it could not parse.

Example:
    >>> redact_url("https://user:pw@hooks.example.com/a?api_key=k&x=1#frag")
    'https://***@hooks.example.com/a?api_key=***&x=***#***'
    >>> redact_text("POST redis://:s3cret@10.0.0.1:6379/0 failed")
    'POST redis://***@10.0.0.1:6379/0 failed'
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["HIDDEN", "redact_text", "redact_url"]

HIDDEN: Final = "***"
"""What replaces a hidden part of a URL."""

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# a URL inside free text: a scheme, then everything up to white space or a closing quote or
# bracket (the characters a message puts around a URL)
_URL_IN_TEXT = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>`)\]]+""")


def redact_url(url: object) -> str:
    """``url`` as it may be shown: user info, query values and fragment hidden.

    Args:
        url: a URL (``str``, ``yarl.URL`` or anything whose ``str()`` is one); need not be valid.

    Returns:
        The URL with ``***`` in place of the user info, of each query value and of the fragment;
        unchanged when it has none of them.
    """
    text = str(url)
    head, hash_mark, fragment = text.partition("#")
    head, question, query = head.partition("?")
    match = _SCHEME.match(head)
    if match is not None:
        start = match.end()
        slash = head.find("/", start)
        end = len(head) if slash < 0 else slash
        at = head.rfind("@", start, end)
        if at >= 0:
            head = f"{head[:start]}{HIDDEN}{head[at:]}"
    else:
        # not scheme://...: whatever precedes an "@" may still be a credential
        slash = head.find("/", head.rfind("@") + 1) if "@" in head else -1
        at = head.rfind("@", 0, len(head) if slash < 0 else slash)
        if at >= 0:
            head = f"{HIDDEN}{head[at:]}"
    if question:
        query = "&".join(_redact_parameter(part) for part in query.split("&"))
    if hash_mark and fragment:
        fragment = HIDDEN
    return f"{head}{question}{query}{hash_mark}{fragment}"


def _redact_parameter(part: str) -> str:
    if not part:
        return part
    name, equals, value = part.partition("=")
    if not equals:
        return HIDDEN  # a bare ?TOKEN is a value, not a name
    return f"{name}={HIDDEN}" if value else part


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`.

    For messages built by other code (an aiohttp exception, a stored dead letter's error) that
    may quote a URL.
    """
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)
