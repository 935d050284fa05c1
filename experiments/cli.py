"""What every experiments/ script does around its one call into gan_jax."""
import contextlib

from absl import app, flags, logging

from gan_jax.errors import exit_on_error


@contextlib.contextmanager
def script(argv):
    """Refuses stray arguments (a flag without its ``--`` lands here), logs at WARNING unless
    --verbosity is given (tfds and Orbax log every file they touch at INFO), and turns a
    GanJaxError into ``error: <message>`` and exit status 1."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    with exit_on_error():
        yield
