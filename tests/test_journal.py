"""The confirm journal: records survive the process, torn and stale slots never count."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rxsinks._store.journal import _HEADER_SIZE, _RECORD, ConfirmJournal, JournalBusy


def reopen(path: Path, capacity: int = 8) -> tuple[ConfirmJournal, list[tuple[int, int]]]:
    journal = ConfirmJournal(path, capacity)
    return journal, journal.unapplied()[1]


def test_what_was_appended_is_there_after_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = ConfirmJournal(path, 8)
    assert journal.append(1, [10, 11]) and journal.append(2, [12])
    journal.close()  # not applied: as after a crash
    again, records = reopen(path)
    assert records == [(1, 10), (1, 11), (2, 12)]
    assert (again.tail, again.head) == (0, 3)


def test_applied_records_are_not_recovered(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = ConfirmJournal(path, 8)
    journal.append(1, [1, 2, 3])
    head, _ = journal.unapplied()
    journal.applied(head)
    journal.append(1, [4])
    journal.close()
    _, records = reopen(path)
    assert records == [(1, 4)]


def test_a_fresh_file_holds_nothing(tmp_path: Path) -> None:
    journal = ConfirmJournal(tmp_path / "j", 8)
    # zeroed slots: a crc of zero is not the crc of a zero record
    assert journal.unapplied() == (0, []) and journal.room == 8


def test_every_block_of_the_file_is_allocated_up_front(tmp_path: Path) -> None:
    # a write into a hole of a shared mapping on a full disk kills the process (SIGBUS): the
    # journal's blocks are allocated when it opens, where a full disk is a plain OSError
    path = tmp_path / "j"
    ConfirmJournal(path, 4096).close()
    size = _HEADER_SIZE + 4096 * _RECORD.size
    assert path.stat().st_size == size
    assert path.stat().st_blocks * 512 >= size


def test_records_wrap_around_and_stale_slots_of_an_earlier_lap_do_not_count(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    journal = ConfirmJournal(path, 4)
    for lap in range(5):  # 20 records through 4 slots
        assert journal.append(7, [lap * 4 + n for n in range(4)])
        assert journal.room == 0
        head, records = journal.unapplied()
        assert records == [(7, lap * 4 + n) for n in range(4)]
        journal.applied(head)
    journal.append(7, [100])  # one slot of the new lap; three still hold the last lap
    journal.close()
    _, records = reopen(path, 4)
    assert records == [(7, 100)]


def test_no_room_means_nothing_is_written(tmp_path: Path) -> None:
    journal = ConfirmJournal(tmp_path / "j", 4)
    assert journal.append(1, [1, 2, 3])
    assert not journal.append(1, [4, 5])  # all or nothing
    assert journal.unapplied()[1] == [(1, 1), (1, 2), (1, 3)]
    assert journal.append(1, [4])


def test_a_torn_record_ends_the_recovery(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = ConfirmJournal(path, 8)
    journal.append(1, [1, 2, 3])
    journal.close()
    # a kill in the middle of writing record 2: half of its bytes are something else
    with path.open("r+b") as file:
        file.seek(_HEADER_SIZE + 2 * _RECORD.size + 4)
        file.write(b"\xff\xff\xff\xff")
    _, records = reopen(path)
    assert records == [(1, 1), (1, 2)]


@pytest.mark.parametrize("content", [b"", b"not a journal at all", b"RXSJRNL1" + b"\0" * 10])
def test_a_file_that_is_not_a_journal_is_started_again(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "j"
    path.write_bytes(content)
    journal = ConfirmJournal(path, 8)
    assert journal.unapplied() == (0, [])
    assert path.stat().st_size == _HEADER_SIZE + 8 * _RECORD.size


def test_one_process_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "j"
    first = ConfirmJournal(path, 8)
    with pytest.raises(JournalBusy, match="in use by another process"):
        ConfirmJournal(path, 8)
    first.close()
    ConfirmJournal(path, 8).close()


def test_records_of_a_killed_process_are_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "j"
    script = textwrap.dedent(
        f"""
        import os
        from rxsinks._store.journal import ConfirmJournal
        journal = ConfirmJournal({str(path)!r}, 64)
        for seq in range(50):
            journal.append(3, [seq])
        os.kill(os.getpid(), 9)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60, env=dict(os.environ))
    assert done.returncode == -9
    _, records = reopen(path, 64)
    assert records == [(3, seq) for seq in range(50)]
