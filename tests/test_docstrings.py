"""Every operator's help() runs: its examples are doctests, each with a plain reactivex operator.

The marble diagrams are checked by tests/test_marbles.py; this runs the examples themselves
(those marked ``+SKIP`` need a running pipeline and are only read) and keeps the promise the
README makes: every operator's help() shows the sink contract and a plain reactivex operator
spliced into a pipeline.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import logging

import pytest

import rxsinks

OPERATORS = [
    rxsinks.batch,
    rxsinks.broadcast,
    rxsinks.deliver,
    rxsinks.filter_events,
    rxsinks.ignore,
    rxsinks.match,
    rxsinks.queue,
    rxsinks.retry_with_breaker,
]


@pytest.mark.parametrize("module", sorted({op.__module__ for op in OPERATORS}))
def test_the_examples_run(module: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)  # the retry example logs its failed attempts
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda op: op.__name__)
def test_help_shows_a_plain_operator_and_the_sink_contract(operator: object) -> None:
    text = inspect.getdoc(operator) or ""
    examples = text[text.index("Example:") :]
    assert "ops." in examples, "no plain reactivex operator in the example"
    assert "returns" in text and "raises" in text and "sink" in text, "no sink contract"
