"""Errors caused by the user's input; entry points print their message without a traceback."""


class GanJaxError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""


class ConfigError(GanJaxError, ValueError):
    pass


class WorkdirError(GanJaxError):
    pass


class DivergenceError(GanJaxError, FloatingPointError):
    """A NaN or Inf in a loss, norm or parameter."""
