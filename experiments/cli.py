"""What every experiments/ script does around its one call into gan_jax."""
import contextlib
import difflib
import inspect
import logging as std_logging
import re
import sys
import threading

from absl import app, flags, logging
from ml_collections import config_dict
from ml_collections.config_flags import config_flags

from gan_jax.errors import GanJaxError, exit_on_error

_HELP = re.compile(r"^--?(help|helpshort|helpfull|helpxml|\?)(=.*)?$")


def report_flags(row_help: str):
    """The flags every report script takes: (--row, --out, --notes, --images_dir)."""
    return (flags.DEFINE_multi_string("row", None, row_help, required=True),
            flags.DEFINE_string("out", None, "The markdown file to write.", required=True),
            flags.DEFINE_string("notes", None, "A file whose text goes, verbatim, under a "
                                "\"Reading\" heading."),
            flags.DEFINE_string("images_dir", None, "Where the sample grids go; default "
                                "images/<out stem>/ next to --out."))


def run(main):
    """``app.run(main)``, its flags parsed by ``parse_flags``."""
    app.run(main, flags_parser=parse_flags)


def parse_flags(argv):
    """absl's flag parsing (``app.run``'s ``flags_parser``), with a bad flag, a config file
    that does not load, an unknown ``--config.<key>`` or a value of the wrong type as one
    ``error: <message>`` line and exit status 1 instead of a traceback, and --help,
    --helpfull, ... exiting 0 (absl exits 1)."""
    try:
        rest = flags.FLAGS(argv)
    except SystemExit as e:
        if e.code == 1 and _asks_for_help(argv):
            sys.exit(0)
        raise
    except flags.Error as e:
        _fail(_flag_error(str(e), argv))
    except (AttributeError, KeyError, OSError):
        # ml_collections looks an override's key up in the config without catching a miss,
        # and an override of a config file that did not load raises that file's OSError.
        message = _config_file_error(argv) or _unknown_config_key(argv)
        if message is None:
            raise
        _fail(message)
    for name, flag in _config_flag_items():
        if _is_error_config(flag.value):  # Raised at the first use, in main, otherwise.
            _fail(_config_file_error(argv) or f"Cannot load the config file of --{name}.")
    return rest


def _fail(message: str):
    with exit_on_error():
        raise GanJaxError(message)


def _asks_for_help(argv) -> bool:
    args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    return any(_HELP.match(a) for a in args)


def _config_flag_items():
    """(name, flag) of each ml_collections config flag."""
    for name, flag in flags.FLAGS._flags().items():  # noqa: SLF001 - absl has no public one
        if hasattr(flag, "_GetOverrides") and hasattr(getattr(flag, "parser", None), "parse"):
            yield name, flag


def _is_error_config(config) -> bool:
    # ml_collections keeps a config file's OSError in one of these and raises it on use.
    return type(config).__name__ == "_ErrorConfig"


def _config_flags(argv):
    """(name, the config file argument, the config) of each config flag, the file loaded
    again: after a failed parse the flag holds no value."""
    for name, flag in _config_flag_items():
        spec = flag.default_as_str.strip("'")
        for arg in argv[1:]:
            if arg.startswith((f"--{name}=", f"-{name}=")):
                spec = arg.split("=", 1)[1]
        try:
            yield name, spec, flag.parser.parse(spec)
        except Exception:  # The file's own error is absl's message.
            continue


def _config_file_error(argv) -> str | None:
    for name, spec, config in _config_flags(argv):
        if _is_error_config(config):
            reason = str(config._error).strip().splitlines()[-1].strip()  # noqa: SLF001
            return (f"Cannot load the config file of --{name}={spec} ({reason}). Pass "
                    f"--{name}=experiments/configs/<name>.py, optionally followed by :smoke.")
    return None


def _unknown_config_key(argv) -> str | None:
    """The message for the first ``--<config>.<key>=...`` whose key the config lacks."""
    for name, _, config in _config_flags(argv):
        message = _unknown_key_in(config, name, argv)
        if message:
            return message
    return None


def _unknown_key_in(config, name: str, argv) -> str | None:
    if _is_error_config(config):
        return None
    for arg in argv[1:]:
        m = re.match(rf"^--?(?:no)?{re.escape(name)}\.([\w.]+)", arg)
        if not m:
            continue
        node, prefix = config, ""
        for part in m.group(1).split("."):
            if not isinstance(node, config_dict.ConfigDict):
                return (f"Config key {prefix[:-1]!r} ({arg}) is a value, not a group of "
                        f"keys: {prefix}{part} does not exist.")
            if part not in node:
                keys = sorted(prefix + k for k in node.keys())
                near = difflib.get_close_matches(prefix + part, keys, n=1)
                return (f"Unknown config key {prefix + part!r} in {arg}"
                        + (f" (did you mean {near[0]!r}?)" if near else "")
                        + f"; valid keys here: {keys}.")
            node, prefix = node[part], prefix + part + "."
    return None


@contextlib.contextmanager
def config_flag_errors(name: str, default: str):
    """Around ``config_flags.DEFINE_config_file(name, default, ...)``: without --<name>= on
    the command line ml_collections loads ``default`` and applies the --<name>.<key>
    overrides as the flag is defined, so an unknown key fails there, before ``run``."""
    try:
        yield
    except (AttributeError, KeyError):
        config = config_flags.ConfigFileFlagParser(name=name).parse(default)
        message = _unknown_key_in(config, name, sys.argv)
        if message is None:
            raise
        _fail(message)


def _flag_error(message: str, argv) -> str:
    """absl's message for a flag it could not parse, on one line, with the type a config
    key takes when that was the problem."""
    if "Error whilst parsing config file" in message:  # The config file raised: its last line.
        lines = [s for s in message.splitlines() if s.strip()]
        return f"{lines[0].split(': Error whilst')[0]}: {lines[-1].strip()}"
    message = " ".join(message.split())
    m = re.match(r"^flag --(\w+)\.([\w.]+)=", message)
    if m:
        for name, spec, config in _config_flags(argv):
            if name != m.group(1):
                continue
            with contextlib.suppress(KeyError, AttributeError, TypeError):
                value = config
                for part in m.group(2).split("."):
                    value = value[part]
                if isinstance(value, config_dict.ConfigDict):
                    return (f"{message.rstrip('.')}. Config key {m.group(2)!r} is a group of "
                            f"keys ({', '.join(sorted(value.keys()))}): set them one by one, "
                            f"e.g. --{name}.{m.group(2)}.{sorted(value.keys())[0]}=...")
                return (f"{message.rstrip('.')}. Config key {m.group(2)!r} must be of type "
                        f"{type(value).__name__} (it is {value!r} in {spec}).")
    return f"{message} (see --help)."


@contextlib.contextmanager
def script(argv):
    """Refuses stray arguments (a flag without its ``--`` lands here), logs at WARNING unless
    --verbosity is given (tfds and Orbax log every file they touch at INFO), keeps Orbax's
    orphaned reads of a damaged checkpoint quiet, and turns a GanJaxError into
    ``error: <message>`` and exit status 1."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    quiet_orphaned_orbax_reads()
    with exit_on_error():
        yield


# -- Orbax's reads orphaned by a failed restore --------------------------------------------
# Orbax runs a restore's reads as tasks on a fresh event loop and closes the loop as soon as
# the first read fails (orbax.checkpoint._src.asyncio_utils._run_sync_via_new_loop: no
# cancelling and awaiting of the others, which asyncio.run would do). The reads still in
# flight then finish on TensorStore's threads, whose callbacks find the loop closed
# ("RuntimeError: Event loop is closed"), and the orphaned coroutines and gather futures are
# collected later, each printing its read error again ("Exception ignored in: <coroutine
# object _read_array_index_and_device_put>", "_GatheringFuture exception was never
# retrieved"): 7 to 800 lines of tracebacks, at times before and at times after the one
# line gan_jax prints for the damaged checkpoint. Exactly these are dropped.

def _from_orbax(exc) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            if "/orbax/" in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return False


def _orphaned_read(unraisable) -> bool:
    exc, obj = unraisable.exc_value, unraisable.object
    if (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
            and threading.current_thread() is not threading.main_thread()):
        return True  # A TensorStore thread's callback into Orbax's closed loop.
    return inspect.iscoroutine(obj) and "/orbax/" in obj.cr_code.co_filename


class _NoOrphanedOrbaxReads(std_logging.Filter):
    """asyncio's "... exception was never retrieved" / "Task was destroyed but it is
    pending" records of Orbax's orphaned reads."""

    def filter(self, record):
        text = record.getMessage()
        if "exception was never retrieved" in text:
            return not (record.exc_info and _from_orbax(record.exc_info[1]))
        return not ("Task was destroyed but it is pending" in text and "/orbax/" in text)


def quiet_orphaned_orbax_reads() -> None:
    """Drops the tracebacks of a failed Orbax restore's orphaned reads (see above) for the
    rest of the process; every other unraisable exception and asyncio record stays.
    Idempotent."""
    previous = sys.unraisablehook
    if getattr(previous, "gan_jax_orbax", False):
        return

    def hook(unraisable):
        if not _orphaned_read(unraisable):
            previous(unraisable)

    hook.gan_jax_orbax = True
    sys.unraisablehook = hook
    asyncio_logger = std_logging.getLogger("asyncio")
    if not any(isinstance(f, _NoOrphanedOrbaxReads) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_NoOrphanedOrbaxReads())
