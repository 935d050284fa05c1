"""Errors caused by the user's input; entry points print their message without a traceback."""
import contextlib
import sys


class GanJaxError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""


class ConfigError(GanJaxError, ValueError):
    pass


class WorkdirError(GanJaxError):
    pass


class DivergenceError(GanJaxError, FloatingPointError):
    """A NaN or Inf in a loss, norm or parameter."""


@contextlib.contextmanager
def exit_on_error():
    """For entry points: a GanJaxError inside becomes ``error: <message>`` on stderr and exit
    status 1, without a traceback."""
    try:
        yield
    except GanJaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
