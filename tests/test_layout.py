"""The package's shape: the import direction between its parts, and an honest ``__all__``.

Core modules (the operators, the event model, the subject, the endpoint's parts) sit at the top
of ``rxsinks``; three subpackages build on them: ``_http`` (delivery over HTTP), ``_store``
(durable stores) and ``_service`` (the relay). Dependencies point one way only:

* core modules import none of the subpackages (``_endpoint``, which composes an endpoint from a
  webhook sink and an optional durable buffer, may import ``_http`` and ``_store``);
* ``_http`` imports only core modules;
* ``_store`` imports core modules, never ``_http`` nor ``_service``;
* nothing imports ``_service`` but ``_service`` itself and the package's ``__init__``.
"""

from __future__ import annotations

import ast
import importlib
import pathlib

import rxsinks

PACKAGE = pathlib.Path(rxsinks.__file__).parent
SUBPACKAGES = ("_http", "_store", "_service")
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "_endpoint": {"_http", "_store"},
    "viz": set(),
    "__init__": {"_http", "_store", "_service"},
    "__main__": {"_service"},
    "_http": {"_http"},
    "_store": {"_store"},
    "_service": {"_http", "_store", "_service"},
}


def part_of(path: pathlib.Path) -> str:
    relative = path.relative_to(PACKAGE)
    if len(relative.parts) > 1:
        return relative.parts[0]
    name = relative.stem
    return name if name in ALLOWED else "core"


def imported_subpackages(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(PACKAGE).parts) - 1
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0:
                if module.startswith("rxsinks."):
                    names.append(module.split(".")[1])
            elif node.level == depth + 1:  # relative to the package root
                names.append(module.split(".")[0] if module else "")
                if not module:
                    names += [alias.name for alias in node.names]
            elif node.level == 1 and depth == 1:  # within the same subpackage
                names.append(path.relative_to(PACKAGE).parts[0])
        elif isinstance(node, ast.Import):
            names += [
                alias.name.split(".")[1]
                for alias in node.names
                if alias.name.startswith("rxsinks.")
            ]
        found.update(name for name in names if name in SUBPACKAGES)
    return found


def test_imports_point_one_way() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = part_of(path)
        extra = imported_subpackages(path) - ALLOWED[part]
        if extra:
            wrong.append(f"{path.relative_to(PACKAGE)} ({part}) imports {sorted(extra)}")
    assert wrong == []


def test_every_module_is_in_a_known_part() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert part_of(path) in ALLOWED


def test_all_is_sorted_complete_and_importable() -> None:
    names = rxsinks.__all__
    # sorted the way ruff sorts it: constants, then classes, then functions
    assert names == sorted(
        names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)
    )
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(rxsinks, name) is not None, name
    public = {
        name
        for name, value in vars(rxsinks).items()
        if not name.startswith("_") and not isinstance(value, type(rxsinks))
    }
    # everything public in the namespace is in __all__ (no Any, TYPE_CHECKING, ...)
    assert public - set(names) == set()


def test_the_error_tree_is_rooted_in_rx_sinks_error() -> None:
    errors = [getattr(rxsinks, name) for name in rxsinks.__all__ if name.endswith("Error")]
    assert errors
    for error in errors:
        assert issubclass(error, rxsinks.RxSinksError), error
    assert issubclass(rxsinks.ConfigErrors, rxsinks.ConfigError)
    assert issubclass(rxsinks.StoreLockedError, rxsinks.StoreError)


def test_the_lazy_redis_names_import_when_asked_for() -> None:
    assert importlib.import_module("rxsinks").RedisStore.__name__ == "RedisStore"
