"""Interruptions of a running study: SIGINT / SIGTERM stop it promptly; ``lyaptune resume`` continues it.

The handler only records the signal (no I/O: it runs between any two bytecodes of the driver, perhaps
while a result is being written). The Tune adapter's :class:`lyaptune.study.tune_adapter.InterruptCallback`
then ends ``Tuner.fit`` at Tune's next step, and the runner shuts Ray down, which ends the trials in flight
(their runs stay open for ``lyaptune resume``) and raises :class:`StudyInterrupted` with the resume line.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Interrupt", "StudyInterrupted"]


class StudyInterrupted(KeyboardInterrupt):
    """A study stopped by SIGINT or SIGTERM; completed runs are stored and ``lyaptune resume`` continues.

    Attributes:
      signum: the signal received.
      message: one line: how many runs are stored and the exact resume command.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.message, self.signum = message, signum


class Interrupt:
    """SIGINT/SIGTERM handlers (main thread only) that record the signal and call ``on_signal`` (which
    must only set flags); a second signal falls back to the previous handler (Ctrl-C twice: stop at
    once)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.on_signal: Callable[[], None] | None = None
        self._saved: dict[int, Any] = {}

    def _restore(self) -> None:
        for sig, handler in self._saved.items():
            # None: a handler installed outside Python (Ray's C++ one), which cannot be put back
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        self._restore()
        if self.on_signal is not None:
            self.on_signal()

    @property
    def name(self) -> str:
        """The signal's name (``SIGTERM``), or '' when none was received."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupt]:
        """The handlers, while the block runs (left in place for the second signal once one came)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            if self.signum is None:
                self._restore()
