"""Log output: plain text for people, or one JSON object per line for log pipelines.

Every JSON line carries timestamp, level, logger, message and the ids of what it is about
(request_id, tenant_id, session_id, turn_id; "" when not known), read from log_context.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from agent_runtime.application import log_context

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# httpx logs a line at INFO for every request it sends: one per model call, beside the
# runtime's own line for each turn's end and its warning for each failed model request. They
# show from DEBUG only.
PER_REQUEST_LOGGERS = ("httpx",)

# Set with `extra={...}` by the code that logs; copied into the JSON line when present.
EXTRA_FIELDS = ("error_id",)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **log_context.current(),
        }
        for name in EXTRA_FIELDS:
            if (value := getattr(record, name, None)) is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """Send the process's logs to stderr in `log_format` (text or json) from `level` up;
    httpx's line per request at DEBUG only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    quiet = logging.getLogger().getEffectiveLevel() > logging.DEBUG
    for name in PER_REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)
