"""One log line that is seen even before the engine configures logging.

vLLM and SGLang load plugins before they set up their loggers; a record logged then reaches only
Python's last-resort handler, which drops INFO. The adapters' plugins log through this.
"""

from __future__ import annotations

import logging
import sys


def log_with_temporary_handler(
    logger: logging.Logger, level: int, msg: str, fmt: str, datefmt: str
) -> None:
    """Emit one record through a stderr handler attached to ``logger`` for this record only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt))
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        logger.log(level, msg)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
