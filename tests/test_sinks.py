"""Tests of rxsinks._sinks: the callback sink's outcomes and flushing, the collecting sink."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from rxsinks._exceptions import SINK_CLOSED, SinkClosedError
from rxsinks._flow import FlushGroup, emit, join_flush
from rxsinks._sinks import CallbackSink, CollectingSink
from tests.fakes import Unreliable, check_close


class Settled:
    """Records what ``emit`` reports."""

    def __init__(self) -> None:
        self.calls: list[BaseException | None] = []

    def __call__(self, error: BaseException | None) -> None:
        self.calls.append(error)


# -- CallbackSink -----------------------------------------------------------------------------


def test_sync_function_outcome_is_the_delivery_outcome() -> None:
    seen: list[int] = []
    boom = Unreliable("no")

    def deliver(value: int) -> None:
        if value < 0:
            raise boom
        seen.append(value)

    sink: CallbackSink[int] = CallbackSink(deliver)
    ok, failed = Settled(), Settled()
    emit(sink, 1, ok)
    emit(sink, -1, failed)  # the error travels in the settle, never out of on_next
    assert seen == [1]
    assert ok.calls == [None]
    assert failed.calls == [boom]


def test_without_an_offer_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def deliver(_: int) -> None:
        raise Unreliable("logged")

    sink: CallbackSink[int] = CallbackSink(deliver)
    with caplog.at_level(logging.ERROR, logger="rxsinks.sinks"):
        sink.on_next(1)
    assert any("logged" in record.getMessage() for record in caplog.records)


def test_a_coroutine_function_outside_a_loop_is_a_clear_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # nothing would ever run the coroutine: the item fails, never vanishes
    async def deliver(_: int) -> None:
        raise AssertionError("never runs")

    sink: CallbackSink[int] = CallbackSink(deliver)
    settled = Settled()
    emit(sink, 1, settled)
    (error,) = settled.calls
    assert isinstance(error, RuntimeError)
    assert "deliver() returned an awaitable outside a running asyncio event loop" in str(error)
    with caplog.at_level(logging.ERROR, logger="rxsinks.sinks"):
        sink.on_next(2)  # no offer: logged
    assert "outside a running asyncio event loop" in caplog.text


async def test_a_coroutine_function_is_awaited_before_the_item_counts_as_delivered() -> None:
    gate = asyncio.Event()
    seen: list[int] = []

    async def deliver(value: int) -> None:
        await gate.wait()
        if value < 0:
            raise Unreliable("async no")
        seen.append(value)

    sink: CallbackSink[int] = CallbackSink(deliver)
    ok, failed = Settled(), Settled()
    emit(sink, 1, ok)
    emit(sink, -1, failed)
    assert ok.calls == [] and failed.calls == []  # held until the coroutines finish
    gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert ok.calls == [None]
    assert len(failed.calls) == 1 and isinstance(failed.calls[0], Unreliable)
    assert seen == [1]


async def test_a_cancelled_delivery_is_a_failed_one() -> None:
    started = asyncio.Event()

    async def deliver(_: int) -> None:
        started.set()
        await asyncio.Event().wait()

    sink: CallbackSink[int] = CallbackSink(deliver)
    settled = Settled()
    emit(sink, 1, settled)
    await started.wait()
    (task,) = sink._tasks
    task.cancel()
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(settled.calls) == 1 and isinstance(settled.calls[0], asyncio.CancelledError)


async def test_completion_waits_for_running_deliveries_and_joins_the_flush() -> None:
    gate = asyncio.Event()
    finished: list[str] = []

    async def deliver(_: int) -> None:
        await gate.wait()

    sink: CallbackSink[int] = CallbackSink(deliver, on_completed=lambda: finished.append("done"))
    sink.on_next(1)
    sink.on_next(2)
    group = FlushGroup()
    with group.active():
        sink.on_completed()
    assert finished == []
    assert (group.flushing, group.remaining()) == (1, 2)
    gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert finished == ["done"]
    assert group.flushing == 0


def test_completion_with_nothing_running_finishes_at_once() -> None:
    finished: list[str] = []
    sink: CallbackSink[int] = CallbackSink(
        lambda _: None, on_completed=lambda: finished.append("x")
    )
    group = FlushGroup()
    with group.active():
        sink.on_completed()
        assert join_flush() is not None  # the group is still current here
    sink.on_completed()  # twice: harmless, the callback runs once
    assert finished == ["x"]


def test_callback_sink_close_semantics() -> None:
    calls: list[int] = []
    sink: CallbackSink[int] = CallbackSink(calls.append)
    check_close(lambda: sink.on_next(1), sink.on_completed)
    settled = Settled()
    emit(sink, 2, settled)  # with a handoff on offer: settled as closed instead of raising
    assert settled.calls == [SINK_CLOSED]
    assert calls == []


def test_on_error_logs_and_completes(caplog: pytest.LogCaptureFixture) -> None:
    finished: list[str] = []
    sink: CallbackSink[int] = CallbackSink(
        lambda _: None, on_completed=lambda: finished.append("x")
    )
    with caplog.at_level(logging.ERROR, logger="rxsinks.sinks"):
        sink.on_error(RuntimeError("stream broke"))
    assert finished == ["x"]
    assert any("stream broke" in record.getMessage() for record in caplog.records)
    with pytest.raises(SinkClosedError):
        sink.on_next(1)


def test_callback_sink_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        CallbackSink(42)  # type: ignore[arg-type]


# -- CollectingSink ---------------------------------------------------------------------------


def test_collects_items_and_flattens_blocks() -> None:
    sink: CollectingSink[Any] = CollectingSink()
    sink.on_next(("a", "b"))
    sink.on_next("c")
    sink.on_next(["d"])
    assert len(sink) == 3
    assert sink.items == [("a", "b"), "c", ["d"]]
    assert sink.flat == ["a", "b", "c", "d"]


def test_collecting_sink_close_semantics() -> None:
    sink: CollectingSink[int] = CollectingSink()
    sink.on_next(1)
    check_close(lambda: sink.on_next(2), sink.on_completed)
    assert sink.items == [1]
    assert sink.completed and sink.error is None


def test_collecting_sink_keeps_the_error() -> None:
    sink: CollectingSink[int] = CollectingSink()
    boom = RuntimeError("x")
    sink.on_error(boom)
    assert sink.completed and sink.error is boom


async def test_wait_for_returns_when_enough_arrived() -> None:
    sink: CollectingSink[int] = CollectingSink()
    loop = asyncio.get_running_loop()
    for value in range(3):
        loop.call_soon(sink.on_next, value)
    assert await sink.wait_for(3, timeout=10) == [0, 1, 2]
    assert await sink.wait_for(1) == [0, 1, 2]  # already there: at once


async def test_wait_for_times_out_with_a_count_in_the_message() -> None:
    sink: CollectingSink[int] = CollectingSink()
    sink.on_next(1)
    with pytest.raises(TimeoutError, match=r"1 of 3 items arrived within 0\.01s"):
        await sink.wait_for(3, timeout=0.01)


async def test_wait_for_and_wait_completed_return_when_the_stream_ends() -> None:
    sink: CollectingSink[int] = CollectingSink()
    loop = asyncio.get_running_loop()
    loop.call_soon(sink.on_next, 1)
    loop.call_soon(sink.on_completed)
    assert await sink.wait_for(5, timeout=10) == [1]  # fewer, but the stream ended
    assert await sink.wait_completed() == [1]
    other: CollectingSink[int] = CollectingSink()
    loop.call_soon(other.on_completed)
    assert await other.wait_completed(timeout=10) == []
