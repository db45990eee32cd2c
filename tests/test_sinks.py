"""Tests of rxsinks._sinks: the callback sink's calls and completion, the collecting sink."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops

from rxsinks._deliver import deliver
from rxsinks._sinks import CallbackSink, CollectingSink
from tests.fakes import Unreliable, check_close

# -- CallbackSink -----------------------------------------------------------------------------


def test_a_plain_function_is_called_with_each_item_at_once() -> None:
    seen: list[int] = []
    sink = CallbackSink(seen.append)
    sink.on_next(1)
    sink.on_next(2)
    assert seen == [1, 2]


def test_a_raising_function_is_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(_: int) -> None:
        raise Unreliable("nope")

    sink = CallbackSink(broken)
    with caplog.at_level(logging.WARNING, logger="rxsinks.sinks"):
        sink.on_next(1)  # does not raise
    assert "nope" in caplog.text and "1 event(s)" in caplog.text


def test_a_coroutine_function_outside_a_loop_is_a_clear_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def post(_: int) -> None:
        pass

    sink = CallbackSink(post)
    with caplog.at_level(logging.WARNING, logger="rxsinks.sinks"):
        sink.on_next(1)
    assert "outside a running asyncio event loop" in caplog.text


async def test_completion_waits_for_running_calls_then_calls_on_completed_once() -> None:
    gate = asyncio.Event()
    finished: list[str] = []
    completions: list[str] = []

    async def post(item: str) -> None:
        await gate.wait()
        finished.append(item)

    sink = CallbackSink(post, on_completed=lambda: completions.append("done"))
    drained: list[bool] = []
    sink.drained.subscribe(on_completed=lambda: drained.append(True))
    sink.on_next("a")
    sink.on_next("b")
    assert sink.pending == 2
    sink.on_completed()
    sink.on_completed()  # twice: harmless
    await asyncio.sleep(0.01)
    assert completions == [] and drained == []
    gate.set()
    for _ in range(100):
        if drained:
            break
        await asyncio.sleep(0.01)
    assert sorted(finished) == ["a", "b"]
    assert completions == ["done"] and drained == [True]


async def test_an_upstream_error_calls_on_error_not_on_completed() -> None:
    errors: list[Exception] = []
    completions: list[str] = []
    sink = CallbackSink(
        lambda _: None,
        on_completed=lambda: completions.append("done"),
        on_error=errors.append,
    )
    boom = RuntimeError("upstream")
    reactivex.concat(reactivex.of(1), reactivex.throw(boom)).subscribe(sink)
    assert errors == [boom] and completions == []


def test_an_upstream_error_without_on_error_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    sink = CallbackSink(lambda _: None)
    with caplog.at_level(logging.ERROR, logger="rxsinks.sinks"):
        sink.on_error(RuntimeError("upstream"))
    assert "the stream failed: upstream" in caplog.text


async def test_an_observable_result_is_subscribed_and_counted_until_it_ends() -> None:
    sink = CallbackSink(lambda item: reactivex.timer(0.01).pipe(ops.ignore_elements()))
    drained: list[bool] = []
    sink.drained.subscribe(on_completed=lambda: drained.append(True))
    sink.on_next(1)
    assert sink.pending == 1
    sink.on_completed()
    for _ in range(100):
        if drained:
            break
        await asyncio.sleep(0.01)
    assert drained == [True] and sink.pending == 0


def test_callback_sink_close_semantics() -> None:
    sink = CallbackSink(lambda _: None)
    check_close(lambda: sink.on_next(1), sink.on_completed)


def test_callback_sink_needs_callables() -> None:
    with pytest.raises(TypeError, match="callable"):
        CallbackSink(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_completed must be callable"):
        CallbackSink(print, on_completed=1)  # type: ignore[arg-type]


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


async def test_a_collecting_sink_is_a_sink_for_deliver_too() -> None:
    sink: CollectingSink[str] = CollectingSink()
    await reactivex.of("a", "b").pipe(deliver(sink), ops.to_list())
    assert sink.items == ["a", "b"]


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
