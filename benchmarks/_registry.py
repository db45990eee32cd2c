"""The real Docker registry and skopeo for the benchmarks, on free 127.0.0.1 ports.

A trimmed copy of what ``tests/registry.py`` does (benchmarks do not import from ``tests/``):

* :func:`missing_binaries`: which of ``docker-registry`` and ``skopeo`` are not installed;
  :func:`registry_version`: the registry's version.
* :func:`build_oci_image`: a tiny one-layer OCI image layout, made with the standard library.
* :func:`registry`: Debian's ``docker-registry serve CONFIG`` with filesystem storage in a
  directory, a debug server (``/debug/vars``) and the given notification endpoints.
* :func:`push`: ``skopeo copy oci:DIR:TAG docker://HOST/REPO:TAG`` with a private home.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from _relay_process import free_port

INSTALL_HINT = "apt-get install docker-registry skopeo"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def missing_binaries() -> list[str]:
    """The binaries this module needs that are not on PATH."""
    return [name for name in ("docker-registry", "skopeo") if shutil.which(name) is None]


def registry_version() -> str:
    """What ``docker-registry --version`` says (``github.com/docker/distribution 2.8.2+ds1``)."""
    done = subprocess.run(
        [shutil.which("docker-registry") or "docker-registry", "--version"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    words = done.stdout.split()
    return " ".join(words[1:]) if len(words) > 1 else done.stdout.strip()


@dataclass(frozen=True)
class OciImage:
    """An OCI image layout directory holding one tagged image."""

    path: Path
    tag: str
    manifest_digest: str
    layer_digest: str

    @property
    def reference(self) -> str:
        """The skopeo transport reference, ``oci:DIR:TAG``."""
        return f"oci:{self.path}:{self.tag}"


def _write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    hexdigest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / hexdigest).write_bytes(data)
    return f"sha256:{hexdigest}", len(data)


def _dumps(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def build_oci_image(directory: Path, tag: str, files: Mapping[str, bytes]) -> OciImage:
    """Write a one-layer linux/amd64 OCI image layout that skopeo can push."""
    (directory / "blobs" / "sha256").mkdir(parents=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(content))
    tar = buffer.getvalue()
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
    reference = {"org.opencontainers.image.ref.name": tag}
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": reference,
            }
        ],
    }
    (directory / "index.json").write_bytes(_dumps(index))
    (directory / "oci-layout").write_bytes(_dumps({"imageLayoutVersion": "1.0.0"}))
    return OciImage(directory, tag, manifest_digest, layer_digest)


@dataclass(frozen=True)
class Registry:
    """A running registry: its ``HOST:PORT``, its debug server's, its pid and its log."""

    host: str
    debug_host: str
    pid: int
    log_path: Path

    def notification_metrics(self) -> dict[str, dict[str, Any]]:
        """Endpoint name -> the registry's own counters (``Pending``, ``Events``, ...)."""
        url = f"http://{self.debug_host}/debug/vars"
        with urllib.request.urlopen(url, timeout=5) as answer:
            document = json.load(answer)
        entries = document["registry"]["notifications"]["endpoints"]
        return {entry["name"]: entry["Metrics"] for entry in entries}

    def log_tail(self, size: int = 4000) -> str:
        """The end of the registry's log, for error messages."""
        return self.log_path.read_text(errors="replace")[-size:]


def _ready(host: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(f"http://{host}/v2/", timeout=1):
        return True
    return False


@contextlib.contextmanager
def registry(directory: Path, endpoints: Sequence[Mapping[str, Any]]) -> Iterator[Registry]:
    """``docker-registry serve`` with storage under ``directory``; stopped on exit.

    Args:
        directory: its config, log and storage go there.
        endpoints: the ``notifications.endpoints`` list (Go durations as strings).

    Raises:
        RuntimeError: it did not answer ``GET /v2/`` within 15 s (the message holds its log).
    """
    directory.mkdir(parents=True, exist_ok=True)
    port, debug_port = free_port(), free_port()
    config = {
        "version": 0.1,
        # info would log one line per request: the benchmark would time the logger
        "log": {"level": "error", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(directory / "storage")},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "debug": {"addr": f"127.0.0.1:{debug_port}"}},
        "notifications": {"endpoints": [dict(endpoint) for endpoint in endpoints]},
    }
    config_path = directory / "registry.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = directory / "registry.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [shutil.which("docker-registry") or "docker-registry", "serve", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = Registry(f"127.0.0.1:{port}", f"127.0.0.1:{debug_port}", proc.pid, log_path)
    try:
        deadline = time.monotonic() + 15
        while not _ready(running.host):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start:\n{running.log_tail()}")
            time.sleep(0.05)
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def push(image: OciImage, destination: str, home: Path) -> None:
    """Push an image layout with skopeo (plain HTTP, no signature policy, a private home).

    Raises:
        RuntimeError: skopeo failed; the message holds its stderr.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
    }
    if os.geteuid() == 0:
        # as root skopeo's blob-info cache would live in /var/lib/containers, outside our home
        env["_CONTAINERS_ROOTLESS_UID"] = "1000"
    command = [
        shutil.which("skopeo") or "skopeo",
        "--insecure-policy",
        "copy",
        "--dest-tls-verify=false",
        image.reference,
        f"docker://{destination}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr}")
