"""Standard Webhooks signatures: the ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``
headers.

The `Standard Webhooks <https://www.standardwebhooks.com/>`_ scheme signs each request with
HMAC-SHA256 over ``f"{id}.{timestamp}."`` followed by the exact body bytes, keyed by a shared
secret written ``whsec_`` + base64(key). A receiver recomputes the HMAC and compares; it also
rejects timestamps too far from its clock, and may drop a ``webhook-id`` it has already seen,
which is why the id of a block must be the same on every retry of that block.

Plain functions over bytes, usable without aiohttp (a receiver can verify with them too)::

    >>> key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    >>> sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='

Always sign the bytes that are sent: re-serialising the JSON changes them and breaks the
signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Iterable

from rxsinks._options import MIN_KEY_BYTES, SECRET_PREFIX, Secret

__all__ = [
    "MAX_MESSAGE_ID",
    "MIN_KEY_BYTES",
    "SECRET_PREFIX",
    "message_id",
    "parse_secret",
    "sign",
    "signature_headers",
]

_BLOCK_ID_PREFIX = "blk_"
_EVENT_ID_PREFIX = "evt_"

MAX_MESSAGE_ID = 255
"""The longest event id used as a ``webhook-id`` as it is (longer ones are hashed)."""

# what an event id may hold to become a header value as it is: visible ASCII, no white space
# (the registry's ids are UUIDs); anything else is hashed, so no event data reaches a header
_SAFE_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_MESSAGE_ID}}}")


def parse_secret(secret: str) -> bytes:
    """Decode a ``whsec_...`` secret into the HMAC key bytes (see :class:`~rxsinks.Secret`,
    where its format and length are checked).

    Args:
        secret: ``"whsec_"`` followed by the base64 of the key.

    Returns:
        The key.

    Raises:
        TypeError: ``secret`` is not a str.
        ValueError: the prefix is missing, the rest is not base64, or the key is shorter than
            :data:`MIN_KEY_BYTES`. The message never contains the secret.
    """
    return Secret(secret).key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Compute a ``webhook-signature`` value: ``"v1,"`` + base64(HMAC-SHA256).

    Args:
        key: the key from :func:`parse_secret`.
        msg_id: the ``webhook-id`` header value.
        timestamp: the ``webhook-timestamp`` header value, unix seconds.
        body: the exact request body bytes.

    Returns:
        The signature, e.g. ``"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="``.
    """
    # hmac.digest is the one-shot C path: about half the cost of hmac.new().digest()
    mac = hmac.digest(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac).decode("ascii")


def signature_headers(
    key: bytes, msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """Build the three Standard Webhooks headers for one request.

    Args:
        key: the key from :func:`parse_secret`.
        msg_id: the message id; for a block of events use :func:`message_id`.
        body: the exact request body bytes.
        timestamp: unix seconds; the current time when ``None`` (each attempt is signed anew).

    Returns:
        ``{"webhook-id": ..., "webhook-timestamp": ..., "webhook-signature": ...}``.
    """
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(key, msg_id, ts, body),
    }


def message_id(event_ids: Iterable[str], body: bytes = b"") -> str:
    """Derive the ``webhook-id`` of a block from its event ids.

    A one-event block uses the event's own id when it is a safe header value (1 to
    :data:`MAX_MESSAGE_ID` visible ASCII characters, as the registry's UUIDs are), else
    ``"evt_"`` + the first 32 hex digits of the SHA-256 of the id: an id with a line break, a
    NUL or 20 KB of text would make a request that can never be sent, and it comes from whoever
    posted the event. A larger block uses ``"blk_"`` + the first 32 hex digits of the SHA-256 of
    the ids joined by newlines. Either way the id depends on the events only, so it is the same
    on every retry and after a restart, and receivers can use it to drop duplicates. When an
    event has no id (or the block is empty), the hash is taken over ``body`` instead, so that
    distinct id-less events never share a message id.

    Args:
        event_ids: the ids of the block's events, in order.
        body: the encoded block, used only when an id is missing.

    Returns:
        The message id.

    Example:
        >>> message_id(["45e1b4e6"])
        '45e1b4e6'
        >>> message_id(["a", "b"])
        'blk_7e18f737311b2dc3b2f269dd78396b03'
        >>> message_id(["evil\\r\\nX: y"])
        'evt_996c1b73d526a2986b93fd08420e83ca'
    """
    ids = list(event_ids)
    if ids and all(ids):
        if len(ids) == 1:
            only = ids[0]
            if _SAFE_ID.fullmatch(only):
                return only
            digest = hashlib.sha256(only.encode("utf-8", "surrogatepass")).hexdigest()
            return _EVENT_ID_PREFIX + digest[:32]
        data = "\n".join(ids).encode("utf-8", "surrogatepass")
    else:
        data = body
    return _BLOCK_ID_PREFIX + hashlib.sha256(data).hexdigest()[:32]
