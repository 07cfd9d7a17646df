"""configure_logging: httpx's line per model request shows from DEBUG only; the runtime's
own lines show at the configured level."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from agent_runtime.infrastructure.observability.logs import configure_logging


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    httpx_level = logging.getLogger("httpx").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(httpx_level)


@pytest.mark.parametrize("level", ["INFO", "info", "WARNING"])
def test_httpx_request_lines_are_left_out_above_debug(level: str) -> None:
    configure_logging(level, "text")
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)


def test_the_runtimes_own_lines_show_at_info() -> None:
    configure_logging("INFO", "json")
    assert logging.getLogger("agent_runtime.application.turn_handler").isEnabledFor(logging.INFO)


def test_httpx_request_lines_show_at_debug() -> None:
    configure_logging("INFO", "text")
    configure_logging("DEBUG", "text")
    assert logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)
