"""JSON logs for the controller: one object per line with `timestamp` (UTC, ISO 8601),
`level` and `event`, plus whatever the call site bound (resource, gang, lease...).

structlog loggers and the standard library's (aiohttp, kubernetes-asyncio) go through the
same renderer, so a log shipper sees one format. The level comes from PHALANX_LOG_LEVEL.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

_SHARED: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_json_logs(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every log line to `stream` (stdout) as JSON, dropping those below `level`."""
    out = stream or sys.stdout
    number = logging.getLevelNamesMapping()[level.upper()]
    render: list[structlog.types.Processor] = [
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=[*_SHARED, structlog.processors.StackInfoRenderer(), *render],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(number)
