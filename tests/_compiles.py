"""Count XLA compilations through ``jax.log_compiles`` (as optax's ``log_compilations``), so
tests prove "no recompilation" without reading jaxinit's private state."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

import jax

_COMPILING = re.compile(r"Compiling (\S+)")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = _COMPILING.match(record.getMessage())
        if match:
            self.names.append(match.group(1))


@contextlib.contextmanager
def log_compilations() -> Iterator[list[str]]:
    """Yield the list of programs compiled inside the block (e.g. ``"jit(_lsuv_linen)"``);
    the list fills as the block runs."""
    logger = logging.getLogger("jax")
    handler = _Collect()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # the records are counted here, not printed
    try:
        with jax.log_compiles():
            yield handler.names
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
