"""The controller logs JSON: one object per line with timestamp, level and event."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest
import structlog

from controller.logs import configure_json_logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Where the logs go during the test; logging is put back as it was afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield io.StringIO()
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_log_line_is_json_with_timestamp_level_and_event(stream: io.StringIO) -> None:
    configure_json_logs("info", stream)
    structlog.get_logger("phalanx.test").info("gang admitted", gang="default/job", pods=8)
    (line,) = lines(stream)
    assert line["event"] == "gang admitted"
    assert line["level"] == "info"
    assert (line["gang"], line["pods"]) == ("default/job", 8)
    stamp = datetime.fromisoformat(str(line["timestamp"]))
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0


def test_lines_below_the_level_are_dropped(stream: io.StringIO) -> None:
    configure_json_logs("warning", stream)
    log = structlog.get_logger()
    log.info("quiet")
    log.warning("loud")
    logging.getLogger("aiohttp.client").info("quiet too")
    assert [line["event"] for line in lines(stream)] == ["loud"]


def test_standard_library_logs_come_out_as_the_same_json(stream: io.StringIO) -> None:
    configure_json_logs("info", stream)
    logging.getLogger("kubernetes_asyncio.client").warning("retrying %s", "GET")
    (line,) = lines(stream)
    assert (line["event"], line["level"]) == ("retrying GET", "warning")
    assert line["logger"] == "kubernetes_asyncio.client"
    assert "timestamp" in line


def test_an_exception_is_logged_as_one_json_line(stream: io.StringIO) -> None:
    configure_json_logs("info", stream)
    try:
        raise ValueError("bad quantity")
    except ValueError:
        structlog.get_logger().exception("cycle failed")
    (line,) = lines(stream)
    assert line["level"] == "error"
    assert "ValueError: bad quantity" in str(line["exception"])
