"""The redirect policy of a webhook: which 3xx answers are followed, and with what.

aiohttp's own redirect handling is off, because it turns a POST answered 301/302/303 into a GET
without its body. Instead, under the ``"safe"`` policy (the default):

* 307 and 308 with a ``Location`` are followed, re-POSTing the same body and headers (the
  signature too: it covers the body, not the URL), up to :data:`MAX_REDIRECTS` hops within the
  one timeout of the attempt;
* when the new URL has another origin (scheme, host, port), the credential headers (those
  redacted in logs) are not sent there: they were given for the configured origin;
* a 307/308 from ``https`` to ``http`` is refused: the body and its signature would go in
  cleartext;
* 301, 302 and 303 *with* a ``Location`` are not followed: the answer carries a ``problem``
  saying to point the endpoint at the new URL (the sink makes that a failure);
* any 3xx *without* a ``Location`` is an ordinary answer (a success, as in the registry).

Under ``"none"`` no redirect is followed and every 3xx is an ordinary answer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from typing import Final

from multidict import CIMultiDict
from yarl import URL

from rxsinks._http.transport import Answer, NoAnswer
from rxsinks._options import RedirectPolicy
from rxsinks._redact import redact_url

__all__ = ["MAX_REDIRECTS", "follow"]

MAX_REDIRECTS: Final = 10
"""How many 307/308 hops one attempt follows before it fails."""

Post = Callable[[URL, CIMultiDict[str], float], Awaitable[Answer | NoAnswer]]
"""Sends one request: ``post(url, headers, seconds_left)``."""


async def follow(
    post: Post,
    url: URL,
    headers: CIMultiDict[str],
    *,
    policy: RedirectPolicy,
    timeout: float,
    secret_names: Collection[str],
) -> Answer | NoAnswer:
    """POST to ``url``, following redirects as ``policy`` says, all within ``timeout`` seconds.

    Args:
        post: sends one request.
        url: the endpoint.
        headers: the request headers.
        policy: ``"safe"`` or ``"none"`` (see the module docstring).
        timeout: seconds for every hop together.
        secret_names: lower-case names of the headers not sent to another origin.

    Returns:
        The last answer (with ``problem`` set when a redirect was refused), or the
        :class:`~rxsinks._http.transport.NoAnswer` of the hop that got none.
    """
    deadline = time.monotonic() + timeout
    target = url
    hops = 0
    while True:
        answer = await post(target, headers, deadline - time.monotonic())
        if (
            isinstance(answer, NoAnswer)
            or policy == "none"
            or not 300 <= answer.status < 400
            or answer.location is None
        ):
            return answer
        try:
            redirect: URL | None = answer.url.join(URL(answer.location))
        except (ValueError, TypeError):
            redirect = None
        # a Location may carry user info too: show it the way the endpoint URL is shown
        shown = repr(redact_url(answer.location if redirect is None else redirect))
        if answer.status not in (307, 308):
            return replace(
                answer,
                problem=f"redirect to {shown} not followed: a {answer.status} would turn the "
                "POST into a GET without the events; point the endpoint at the new URL",
            )
        if hops == MAX_REDIRECTS:
            return replace(answer, problem=f"stopped after {MAX_REDIRECTS} redirects")
        if redirect is None or redirect.scheme not in ("http", "https") or not redirect.host:
            return replace(answer, problem=f"redirect to {shown}: not an http(s) URL")
        if target.scheme == "https" and redirect.scheme != "https":
            # the body and a valid signature would cross the network in cleartext
            return replace(
                answer,
                problem=f"redirect to {shown} refused: it leaves https for http, which would "
                "send the events and their signature in cleartext; point the endpoint at the "
                "URL to use",
            )
        if redirect.origin() != target.origin():
            # credentials were given for the configured origin, not for wherever it points
            headers = headers.copy()
            for name in secret_names:
                headers.popall(name, None)
        target = redirect
        hops += 1
