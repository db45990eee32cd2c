"""Writes ``store-format-1.tar.gz``: an SQLite store of format 1, made by rxsinks 0.1.0 before
the store kept cursors (the commit before format 2 came in: b8f743c), for the migration tests.

Run it with that version of rxsinks on the path (``git archive b8f743c | tar -x -C /tmp/old``,
then ``PYTHONPATH=/tmp/old python tests/data/store-format-1/make.py``). A child process stores 12
events ``f0``..``f11`` (``f0``-``f5`` for endpoints ``a`` and ``b``, ``f6``-``f8`` for ``a``
only, ``f9``-``f11`` for ``b`` only); ``a`` confirms ``f0``, ``f1`` and ``f4`` through the
database and dead-letters ``f2``; ``b`` confirms ``f0`` and dead-letters ``f9``; then ``a``
notes ``f3`` and ``f6`` in the confirm journal and the child is killed (SIGKILL) before the
store applied them. What the next open must find, migrated: ``a`` has ``f5``, ``f7``, ``f8``
to deliver, ``b`` has ``f1``-``f5``, ``f10``, ``f11``, and the dead letters ``a: f2`` and
``b: f9``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    import rxsinks
    from rxsinks._store.sqlite import SQLiteStore

    async def main(path):
        store = SQLiteStore(path, exclusive=True)
        await store.open()
        events = [rxsinks.Event.new("push", id=f"f{i}", target={"repository": "r/x"})
                  for i in range(12)]
        routes = [["a", "b"]] * 6 + [["a"]] * 3 + [["b"]] * 3
        seqs = await store.append(events, routes)
        await store.confirm("a", [seqs[0], seqs[1], seqs[4]])
        await store.dead_letter("a", [seqs[2]], "422 Unprocessable Entity", 1)
        await store.confirm("b", [seqs[0]])
        await store.dead_letter("b", [seqs[9]], "410 Gone", 2)
        while not store.confirm_now("a", [seqs[3]]):  # (a gets its journal id)
            await asyncio.sleep(0.01)
        assert store.confirm_now("a", [seqs[6]])
        os.kill(os.getpid(), 9)

    asyncio.run(main(sys.argv[1]))
    """
)


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        path = Path(name) / "rxsinks.db"
        done = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=dict(os.environ))
        assert done.returncode == -9, done.returncode
        with tarfile.open(HERE / "store-format-1.tar.gz", "w:gz") as archive:
            for file in sorted(Path(name).iterdir()):
                if file.name.endswith(".lock"):
                    continue
                archive.add(file, arcname=file.name)
                print(file.name, file.stat().st_size)


if __name__ == "__main__":
    main()
