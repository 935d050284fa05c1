"""SIGTERM / SIGINT as a request to stop the training loop at a step all processes agree on."""
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopSignals:
    """Turns SIGTERM / SIGINT into a request to stop after the current dispatch; a second
    SIGINT interrupts at once.

    With several processes all stop after the same dispatch. SIGTERM goes through JAX's
    preemption sync: ``jax.distributed`` catches it from start-up on (a handler of ours
    would replace its own, and one that came before the loop was lost) and the hosts agree
    on a dispatch in the background, with no device work. SIGINT is agreed by a collective,
    which waits for the dispatch in flight, so only where the loop asks (``agree``)."""

    def __init__(self):
        self.received, self._old, self._dispatches = None, {}, 0
        self._preemption_sync = False

    def __enter__(self):
        catch = (signal.SIGTERM, signal.SIGINT)
        if jax.process_count() > 1:
            try:
                multihost_utils.reached_preemption_sync_point(0)
                self._preemption_sync, catch = True, (signal.SIGINT,)
            except RuntimeError:  # No preemption service: SIGTERM is agreed like SIGINT.
                pass
        for sig in catch:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # Not the main thread: leave signals to the caller.
                pass
        return self

    def _handle(self, signum, frame):
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def stop_requested(self, agree: bool = True) -> bool:
        """Called once per dispatch, by every process alike."""
        if jax.process_count() == 1:
            return self.received is not None
        self._dispatches += 1
        if self._preemption_sync and multihost_utils.reached_preemption_sync_point(
                self._dispatches):
            self.received = signal.SIGTERM
        elif agree:
            flags = multihost_utils.process_allgather(np.int32(self.received or 0))
            self.received = self.received or int(np.max(flags)) or None
        else:
            return False
        return self.received is not None

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
