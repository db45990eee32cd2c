"""The real Docker registry and skopeo for end-to-end tests, started on free 127.0.0.1 ports.

* :func:`require_binary`: the path of ``docker-registry`` or ``skopeo``; a missing one skips the
  test, except with ``CI=true`` where it fails (CI installs both with apt-get).
* :func:`build_oci_image`: a tiny OCI image layout (one gzip layer, a config, a manifest,
  ``index.json``, ``oci-layout``) made with the standard library, for skopeo to push.
* :class:`Registry`: Debian's ``docker-registry`` (Docker Distribution 2.8) with a generated
  ``config.yml`` in its own directory: storage there, deletes enabled, ``log.level: info`` to a
  log file, a debug server whose ``/debug/vars`` shows the registry's own notification metrics,
  and the ``notifications`` section the test gives it.
* :class:`Skopeo`: push, pull, copy, inspect and delete through the real ``skopeo``.

Fixtures (a test module loads them with ``pytest_plugins = ["tests.registry"]``):

* ``make_registry``: ``await make_registry(endpoints, events=...)`` starts a :class:`Registry`;
  every registry it started is stopped when the test ends, pass or fail.
* ``skopeo``: a :class:`Skopeo` whose working files live in the test's temporary directory.
* ``make_oci_image``: ``make_oci_image(name, files)`` builds an image layout (see
  :func:`build_oci_image`) under the test's temporary directory.

Import names from this module only under ``TYPE_CHECKING``: importing it before pytest loads it
as a plugin would keep its asserts from being rewritten (a warning, hence an error, here).

Everything here waits with asyncio (never blocking the loop): the receivers the registry posts
notifications to usually run on the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

__all__ = [
    "INSTALL_HINT",
    "MakeOciImage",
    "MakeRegistry",
    "OciImage",
    "Registry",
    "Skopeo",
    "SkopeoError",
    "build_oci_image",
    "free_port",
    "make_oci_image",
    "make_registry",
    "require_binary",
    "skopeo",
]

INSTALL_HINT = "apt-get install docker-registry skopeo"
"""How to get the binaries these helpers need."""

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
_REF_NAME = "org.opencontainers.image.ref.name"

_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0
_SKOPEO_TIMEOUT = 30.0


def require_binary(name: str) -> str:
    """The path of an executable the end-to-end tests need.

    Args:
        name: ``"docker-registry"`` or ``"skopeo"``.

    Returns:
        Its absolute path.

    Raises:
        pytest.skip.Exception: it is not installed (locally: the test is skipped with the hint).
        pytest.fail.Exception: it is not installed and ``CI=true``: CI must run these tests.
    """
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not installed: {INSTALL_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the end-to-end tests must run in CI)")
        pytest.skip(reason)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- OCI image layouts


@dataclass(frozen=True)
class OciImage:
    """An OCI image layout directory holding one tagged image.

    Attributes:
        path: the layout directory.
        tag: the image's tag in ``index.json``.
        manifest_digest: ``sha256:...`` of the manifest (what the registry reports on push).
        config_digest: ``sha256:...`` of the config blob.
        layer_digest: ``sha256:...`` of the (gzip) layer blob.
    """

    path: Path
    tag: str
    manifest_digest: str
    config_digest: str
    layer_digest: str

    @property
    def reference(self) -> str:
        """The skopeo transport reference, ``oci:DIR:TAG``."""
        return f"oci:{self.path}:{self.tag}"

    @property
    def blob_digests(self) -> tuple[str, str]:
        """The config and layer digests, the blobs a push uploads."""
        return (self.config_digest, self.layer_digest)


def _write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    hexdigest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / hexdigest).write_bytes(data)
    return f"sha256:{hexdigest}", len(data)


def _tar(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    # fixed owner, mode and mtime: the same files always make the same layer digest
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 0
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _dumps(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def build_oci_image(directory: Path, tag: str, files: Mapping[str, bytes]) -> OciImage:
    """Write a one-layer linux/amd64 OCI image layout that skopeo can push.

    Args:
        directory: where to create the layout (created; must not hold another layout).
        tag: the tag recorded in ``index.json`` (``org.opencontainers.image.ref.name``).
        files: the layer's files, path -> content. Put something unique in them to get blobs
            no other image shares (skopeo would otherwise reuse or mount shared blobs).

    Returns:
        The layout and its digests.

    Raises:
        ValueError: ``files`` is empty, or ``tag`` is empty.
    """
    if not files:
        raise ValueError("an OCI image needs at least one file in its layer")
    if not tag:
        raise ValueError("an OCI image needs a tag")
    (directory / "blobs" / "sha256").mkdir(parents=True)
    tar = _tar(files)
    layer_digest, layer_size = _write_blob(directory, gzip.compress(tar, mtime=0))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]},
    }
    config_digest, config_size = _write_blob(directory, _dumps(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size}],
    }
    manifest_digest, manifest_size = _write_blob(directory, _dumps(manifest))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {_REF_NAME: tag},
            }
        ],
    }
    (directory / "index.json").write_bytes(_dumps(index))
    (directory / "oci-layout").write_bytes(_dumps({"imageLayoutVersion": "1.0.0"}))
    return OciImage(directory, tag, manifest_digest, config_digest, layer_digest)


MakeOciImage = Callable[..., OciImage]


@pytest.fixture
def make_oci_image(tmp_path: Path) -> MakeOciImage:
    """A factory of image layouts: ``make_oci_image("alpha", {"a.txt": b"..."}, tag="v1")``
    writes ``tmp_path/oci/alpha`` (see :func:`build_oci_image`)."""

    def make(name: str, files: Mapping[str, bytes], *, tag: str = "v1") -> OciImage:
        return build_oci_image(tmp_path / "oci" / name, tag, files)

    return make


# --------------------------------------------------------------------------- the registry


class Registry:
    """One ``docker-registry serve`` process with a generated configuration.

    Args:
        directory: its own directory: ``config.yml``, ``registry.log`` and ``storage/`` go there.
        endpoints: the ``notifications.endpoints`` list, as the registry reads it (Go durations
            as strings: ``timeout: 2s``).
        events: the ``notifications.events`` section (``{"includereferences": True}``).

    Attributes:
        host: ``127.0.0.1:PORT`` once started (for ``docker://HOST/REPO:TAG``).
        debug_host: ``127.0.0.1:PORT`` of its debug server (``/debug/vars``).
        config_path: the generated ``config.yml``.
        log_path: the registry's output (``log.level: info``).
    """

    def __init__(
        self,
        directory: Path,
        endpoints: Sequence[Mapping[str, Any]],
        *,
        events: Mapping[str, Any] | None = None,
    ) -> None:
        self.binary = require_binary("docker-registry")
        self.directory = directory
        self.endpoints = [dict(endpoint) for endpoint in endpoints]
        self.events = dict(events or {})
        self.config_path = directory / "config.yml"
        self.log_path = directory / "registry.log"
        self.host = ""
        self.debug_host = ""
        self._process: asyncio.subprocess.Process | None = None

    def __repr__(self) -> str:
        return f"Registry({self.host or 'not started'}, dir={self.directory})"

    def _config(self, port: int, debug_port: int) -> dict[str, Any]:
        notifications: dict[str, Any] = {"endpoints": self.endpoints}
        if self.events:
            notifications["events"] = self.events
        return {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.directory / "storage")},
                # manifest deletes are refused (405) unless enabled
                "delete": {"enabled": True},
                # the purge job would only add noise to the log of a short-lived registry
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": f"127.0.0.1:{port}",
                "debug": {"addr": f"127.0.0.1:{debug_port}"},
            },
            "notifications": notifications,
        }

    async def start(self) -> None:
        """Start the registry and wait until ``GET /v2/`` answers 200.

        Raises:
            RuntimeError: it did not come up in time; the message holds the end of its log.
        """
        if self._process is not None:
            raise RuntimeError("the registry is already started")
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # another process may take a free port before the registry binds it
            port, debug_port = free_port(), free_port()
            self.config_path.write_text(yaml.safe_dump(self._config(port, debug_port)))
            with self.log_path.open("ab") as log:
                process = await asyncio.create_subprocess_exec(
                    self.binary,
                    "serve",
                    str(self.config_path),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                )
            self._process = process
            self.host, self.debug_host = f"127.0.0.1:{port}", f"127.0.0.1:{debug_port}"
            if await self._wait_ready():
                return
            exited = process.returncode is not None
            await self.stop()
            if not exited:  # up but not answering: another port would not help
                break
        raise RuntimeError(f"docker-registry did not start:\n{self.log_tail()}")

    async def _wait_ready(self) -> bool:
        assert self._process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while loop.time() < deadline and self._process.returncode is None:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"http://{self.host}/v2/") as response:
                        if response.status == 200:
                            return True
                await asyncio.sleep(0.05)
        return False

    async def stop(self) -> None:
        """Stop the registry (SIGTERM, then SIGKILL after a few seconds). Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()

    def log_tail(self, size: int = 6000) -> str:
        """The end of the registry's log (for failure messages)."""
        if not self.log_path.exists():
            return "(no registry log)"
        return self.log_path.read_text(errors="replace")[-size:]

    async def notification_metrics(self) -> dict[str, dict[str, Any]]:
        """The registry's own metrics per notification endpoint, from its ``/debug/vars``.

        Returns:
            endpoint name -> ``{"Pending", "Events", "Successes", "Failures", "Errors",
            "Statuses"}`` as the registry counts them.
        """
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"http://{self.debug_host}/debug/vars") as response,
        ):
            response.raise_for_status()
            document = await response.json(content_type=None)
        entries = document["registry"]["notifications"]["endpoints"]
        return {entry["name"]: entry["Metrics"] for entry in entries}


MakeRegistry = Callable[..., Awaitable[Registry]]


@pytest.fixture
async def make_registry(tmp_path: Path) -> AsyncIterator[MakeRegistry]:
    """A factory of started registries: ``await make_registry(endpoints, events=...)``.

    Each registry gets its own directory under the test's ``tmp_path``; all are stopped when the
    test ends. :meth:`Registry.log_tail` is the end of a registry's log, for failure messages.
    """
    require_binary("docker-registry")  # skip (or fail in CI) before anything is started
    registries: list[Registry] = []

    async def make(
        endpoints: Sequence[Mapping[str, Any]], *, events: Mapping[str, Any] | None = None
    ) -> Registry:
        registry = Registry(tmp_path / f"registry{len(registries)}", endpoints, events=events)
        registries.append(registry)
        await registry.start()
        return registry

    try:
        yield make
    finally:
        for registry in registries:
            await registry.stop()


# --------------------------------------------------------------------------- skopeo


class SkopeoError(RuntimeError):
    """A skopeo command failed; the message holds the command and its stderr."""


class Skopeo:
    """The ``skopeo`` command against plain-HTTP registries on 127.0.0.1.

    TLS verification is turned off for ``docker://`` references (the test registry speaks plain
    HTTP) and the signature policy is not consulted (``--insecure-policy``), so no
    ``/etc/containers/policy.json`` is needed. Its home is a private directory, so a user's
    credentials or caches never change what it does.

    Args:
        home: a private directory for skopeo's per-user files.
    """

    def __init__(self, home: Path) -> None:
        self.binary = require_binary("skopeo")
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(home),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data"),
        }
        if os.geteuid() == 0:
            # as root, skopeo keeps its blob-info cache (which blob is in which repository, used
            # to mount blobs across repositories) in /var/lib/containers, outside the test;
            # containers/image reads its rootless uid from this variable, and a rootless user's
            # cache is under XDG_DATA_HOME, in the private home
            self.env["_CONTAINERS_ROOTLESS_UID"] = "1000"
        self.commands: list[list[str]] = []
        """Every command run, in order (for failure messages)."""

    async def run(self, *args: str, timeout: float = _SKOPEO_TIMEOUT) -> str:
        """Run ``skopeo --insecure-policy ARGS`` and return its stdout.

        Raises:
            SkopeoError: a non-zero exit, or no exit within ``timeout`` seconds (then killed).
        """
        command = [self.binary, "--insecure-policy", *args]
        self.commands.append(command)
        process = await asyncio.create_subprocess_exec(
            *command,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.communicate()
            raise SkopeoError(f"{' '.join(command)}: no exit within {timeout}s") from None
        if process.returncode != 0:
            raise SkopeoError(
                f"{' '.join(command)}: exit {process.returncode}: {err.decode(errors='replace')}"
            )
        return out.decode()

    async def copy(self, source: str, destination: str) -> None:
        """``skopeo copy SOURCE DESTINATION`` (``oci:DIR:TAG`` or ``docker://HOST/REPO:TAG``)."""
        flags = []
        if source.startswith("docker://"):
            flags.append("--src-tls-verify=false")
        if destination.startswith("docker://"):
            flags.append("--dest-tls-verify=false")
        await self.run("copy", *flags, source, destination)

    async def inspect(self, reference: str) -> dict[str, Any]:
        """``skopeo inspect docker://...``: the image's summary (reads manifest and config)."""
        document: dict[str, Any] = json.loads(
            await self.run("inspect", "--tls-verify=false", reference)
        )
        return document

    async def delete(self, reference: str) -> None:
        """``skopeo delete docker://HOST/REPO@DIGEST`` (the registry needs deletes enabled)."""
        await self.run("delete", "--tls-verify=false", reference)


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    """A :class:`Skopeo` with its home in the test's temporary directory."""
    return Skopeo(tmp_path / "skopeo-home")
