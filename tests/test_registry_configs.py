"""The Docker registry's own configuration files load as they are (tests/data/registry-configs).

rxsinks reads their ``notifications:`` section (and the ``log:`` section it shares with the
registry); every other top-level section of the registry's configuration, v2.8 and current, is
accepted and ignored with a note.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rxsinks._options import Headers
from rxsinks._service.build import build_endpoints
from rxsinks._service.config import ConfigErrors, load_config, parse_config

CONFIGS = Path(__file__).parent / "data" / "registry-configs"

# The registry's top-level sections: the fields of its Configuration struct
# (configuration/configuration.go) in registry 3, plus those registry 2.8 had and 3 dropped.
REGISTRY_3_SECTIONS = (
    "version",
    "log",
    "loglevel",
    "storage",
    "auth",
    "middleware",
    "http",
    "notifications",
    "redis",
    "health",
    "catalog",
    "tags",
    "proxy",
    "validation",
    "policy",
)
REGISTRY_2_ONLY_SECTIONS = ("reporting", "compatibility")

# file -> (name, disabled, url) of each endpoint, in order
EXPECTED = {
    "debian-2.8.2-config.yml": [],
    "v2.8-config-example.yml": [],
    "v2.8-config-dev.yml": [
        ("local-5003", True, "http://localhost:5003/callback"),
        ("local-8083", True, "http://localhost:8083/callback"),
    ],
    "v2.8-config-cache.yml": [
        ("local-8082", True, "http://localhost:5003/callback"),
        ("local-8083", True, "http://localhost:8083/callback"),
    ],
    "v3-config-example.yml": [],
    "v3-config-dev.yml": [],
    "v3-config-cache.yml": [
        ("local-8082", True, "http://localhost:5003/callback"),
        ("local-8083", True, "http://localhost:8083/callback"),
    ],
}


def test_every_sample_is_tested() -> None:
    files = {path.name for path in CONFIGS.glob("*.yml")}
    assert files == {*EXPECTED, "v3-configuration-reference.yml"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_sample_config_loads_with_its_endpoints(name: str) -> None:
    path = CONFIGS / name
    config = load_config(path, environ={})
    found = [(e.name, e.disabled, e.url) for e in config.endpoints]
    assert found == EXPECTED[name]
    # each of its other sections is named in the note about what was ignored
    sections = set(yaml.safe_load(path.read_text())) - {"notifications", "log"}
    (note,) = [note for note in config.notes if note.startswith("ignored registry sections: ")]
    assert set(note.partition(": ")[2].partition(" (")[0].split(", ")) == sections
    if found:
        # the registry's notifications.events.includereferences is read too
        assert config.include_references is True
    assert build_endpoints(config) == ()  # every endpoint of the samples is disabled


def test_the_configuration_reference_loads_with_every_section(tmp_path: Path) -> None:
    text = (CONFIGS / "v3-configuration-reference.yml").read_text()
    # the one placeholder of the reference (the registry cannot read it either): a mapping
    placeholder = "headers: <http.Header>"
    assert text.count(placeholder) == 1
    path = tmp_path / "config.yml"
    path.write_text(text.replace(placeholder, "headers: {Authorization: [Bearer <your token>]}"))

    config = load_config(path, environ={})
    (hook,) = config.endpoints
    assert (hook.name, hook.url, hook.disabled) == (
        "alistener",
        "https://my.listener.com/event",
        False,
    )
    assert (hook.webhook.timeout, hook.retry.threshold, hook.retry.backoff) == (1.0, 10, 1.0)
    assert hook.webhook.headers == Headers({"Authorization": "Bearer <your token>"})
    assert hook.ignore.ignore_actions == {"pull"}
    assert hook.ignore.ignore_media_types == {"application/octet-stream"}
    assert config.log.level == "debug"
    assert [endpoint.name for _, endpoint in build_endpoints(config)] == ["alistener"]


@pytest.mark.parametrize(
    "section",
    # (notifications and log are read: the tests of the configuration cover them)
    [
        s
        for s in REGISTRY_3_SECTIONS + REGISTRY_2_ONLY_SECTIONS
        if s not in ("notifications", "log")
    ],
)
def test_every_registry_section_is_accepted_and_ignored(section: str) -> None:
    data = {
        section: {"anything": ["the registry", "reads"]},
        "notifications": {"endpoints": [{"name": "a", "url": "http://127.0.0.1:9/"}]},
    }
    config = parse_config(data)
    assert [endpoint.name for endpoint in config.endpoints] == ["a"]
    assert any(section in note for note in config.notes if note.startswith("ignored"))


def test_a_section_the_registry_does_not_have_is_still_an_error() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config({"tag": {"concurrencylimit": 8}})
    (problem,) = info.value.problems
    assert problem.path == "tag"
    assert "unknown key" in problem.detail


def test_a_duplicate_key_is_the_registrys_business_only_in_its_own_sections(
    tmp_path: Path,
) -> None:
    ignored = tmp_path / "ignored.yml"
    ignored.write_text("middleware:\n  storage: [a]\n  storage: [b]\nnotifications: {}\n")
    assert load_config(ignored, environ={}).endpoints == ()
    read = tmp_path / "read.yml"
    read.write_text("notifications:\n  endpoints: []\n  endpoints: []\n")
    with pytest.raises(ConfigErrors, match="line 3, column 3: invalid YAML: found duplicate key"):
        load_config(read, environ={})
