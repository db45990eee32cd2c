"""TLS settings of a webhook endpoint: which servers to trust and which client certificate to show.

The registry offered no TLS options for endpoints (distribution#1463, #3182, #3824); rxsinks takes
the usual three: a CA bundle to trust, a client certificate for mutual TLS, and a switch to skip
verification for test setups. Everything is checked when the sink is built, so a wrong path fails
at start-up with the file named, not at the first delivery.
"""

from __future__ import annotations

import os
import ssl
from typing import NoReturn

__all__ = ["PathArg", "client_ssl"]

PathArg = str | os.PathLike[str]
"""A file path argument."""


def _check_file(argument: str, path: object) -> str:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"{argument} must be a path (str or os.PathLike), got {type(path).__name__}"
        )
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise ValueError(f"{argument} must be a non-empty file path")
    if not os.path.exists(text):
        raise ValueError(f"{argument} {text!r}: no such file")
    if not os.path.isfile(text):
        raise ValueError(f"{argument} {text!r}: not a regular file")
    if not os.access(text, os.R_OK):
        raise ValueError(f"{argument} {text!r}: not readable (permission denied)")
    return text


def _encrypted_key() -> NoReturn:
    # without a callback OpenSSL would prompt for a pass phrase on the terminal and block
    raise ValueError("the private key is encrypted; give an unencrypted key_file")


def client_ssl(
    *,
    ca_file: PathArg | None = None,
    cert_file: PathArg | None = None,
    key_file: PathArg | None = None,
    verify: bool = True,
) -> ssl.SSLContext | bool:
    """Build the ``ssl`` argument for aiohttp requests from an endpoint's TLS options.

    Args:
        ca_file: PEM bundle of the certificate authorities to trust. It *replaces* the system's
            trust store for this endpoint (pin a private CA).
        cert_file: PEM file with the client certificate (and its chain) to present; it may also
            hold the private key.
        key_file: PEM file with the client certificate's private key, when it is not in
            ``cert_file``. Must not be encrypted.
        verify: ``False`` skips verification of the server's certificate and host name.

    Returns:
        ``True`` when nothing is configured (aiohttp's default verifying context, whose
        connections every such endpoint can share), ``False`` when only ``verify=False`` is set,
        otherwise a new :class:`ssl.SSLContext`.

    Raises:
        TypeError: a path is not a str or path-like, or ``verify`` is not a bool.
        ValueError: a file is missing, unreadable or not valid PEM (the message names the
            argument and the file), ``key_file`` is given without ``cert_file``, the key does not
            match the certificate, or ``ca_file`` is combined with ``verify=False``.
    """
    if not isinstance(verify, bool):
        raise TypeError(f"verify_tls must be a bool, got {type(verify).__name__}")
    if key_file is not None and cert_file is None:
        raise ValueError("key_file is set but cert_file is not: give the client certificate too")
    if ca_file is not None and not verify:
        raise ValueError("ca_file has no effect with verify_tls=False: drop one of them")
    ca = None if ca_file is None else _check_file("ca_file", ca_file)
    cert = None if cert_file is None else _check_file("cert_file", cert_file)
    key = None if key_file is None else _check_file("key_file", key_file)
    if cert is None and ca is None:
        return verify
    if verify:
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        except ssl.SSLError as exc:
            raise ValueError(f"ca_file {ca!r}: not a PEM certificate bundle ({exc})") from exc
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        try:
            context.load_cert_chain(cert, key, password=_encrypted_key)
        except ssl.SSLError as exc:
            files = f"cert_file {cert!r}" + ("" if key is None else f" / key_file {key!r}")
            raise ValueError(
                f"{files}: cannot load the client certificate and key ({exc.reason or exc}); "
                "expected PEM, with the private key in cert_file or key_file, matching the "
                "certificate"
            ) from exc
        except ValueError as exc:
            raise ValueError(f"key_file {key or cert!r}: {exc}") from exc
    return context
