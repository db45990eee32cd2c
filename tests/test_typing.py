"""mypy --strict sees through the operators: a sink of the wrong type after any of them fails.

The operator factories are generic (as RxPY's are), so the type of a block flows from the
source through ``batch``, the filters and plain reactivex operators into ``deliver``, whose
sink must take exactly that.
"""

from __future__ import annotations

from pathlib import Path

from mypy import api

PROGRAM = """
from reactivex import Observable
from reactivex import operators as ops
import rxsinks
from rxsinks import Event, Outcome

events = rxsinks.EventSubject()

def per_event(event: Event) -> None: ...
def per_block(block: tuple[Event, ...]) -> None: ...
async def post(block: tuple[Event, ...]) -> None: ...
def as_text(event: Event) -> str: return event.id

fine_1: Observable[Outcome] = events.pipe(rxsinks.batch(10, 0.5), rxsinks.deliver(per_block))
fine_2: Observable[Outcome] = events.pipe(
    rxsinks.ignore(actions=["pull"]),
    rxsinks.deliver(
        per_event, queue=rxsinks.queue(max_events=5), retry=rxsinks.retry_with_breaker()
    ),
)
fine_3: Observable[Outcome] = events.pipe(rxsinks.batch(10), rxsinks.deliver(post))
wrong_after_batch = events.pipe(rxsinks.batch(10, 0.5), rxsinks.deliver(per_event))  # line 21
wrong_with_a_queue = events.pipe(rxsinks.deliver(per_block, queue=rxsinks.queue()))  # line 22
wrong_after_map = events.pipe(ops.map(as_text), rxsinks.deliver(per_event))  # line 23
"""


def test_a_wrongly_typed_sink_is_caught_after_any_operator(tmp_path: Path) -> None:
    program = tmp_path / "pipelines.py"
    program.write_text(PROGRAM.lstrip("\n"))
    out, err, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(program)]
    )
    errors = sorted({int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line})
    assert status == 1, out + err
    assert errors == [21, 22, 23], out
