"""Stopping a command on SIGTERM or SIGINT: within seconds, one line, no process left behind.

A valuation commits each batch as soon as it finishes, so a stop loses at most the
batches in flight, which the re-run recomputes. What the defaults do instead:

- SIGINT raises ``KeyboardInterrupt`` wherever the main thread is; its traceback is the
  user's last view.
- SIGTERM ends the process silently. Prefect's temporary API server, a child process,
  is re-parented to PID 1 and keeps running (~220 MB each).
- During a flow run Prefect turns SIGTERM into an exception, after which the thread pool
  waits for every batch in flight: minutes for a large one (a thread cannot be stopped).

``Interruption``, entered by the CLI around one command, turns both signals into
``errors.Interrupted`` in the main thread, so the command unwinds as for Ctrl-C: an open
DuckDB transaction rolls back, the MLflow run being logged is marked KILLED, Prefect
records the flow run as crashed. A deadline bounds the unwinding: ``GRACE_SECONDS`` after
the signal the process reports, stops its children and exits, whatever the main thread
is still waiting for (ending the process then is as safe as SIGKILL, which the
kill/resume test covers). Either way the user sees one ``amortval: error:`` line with what
is stored and how to resume, and the exit status is 128 + the signal number (130 for
SIGINT, 143 for SIGTERM), as a shell reports a process ended by that signal.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn

from amortval.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Unwinding after a signal takes well under a second when nothing long is in flight
# (rollback, two Prefect API calls, one MLflow update); a longer wait only delays the exit.
GRACE_SECONDS = 3.0
CHILD_STOP_SECONDS = 2.0
STATUS_SECONDS = 2.0

_active: Interruption | None = None


class Interruption:
    """SIGINT/SIGTERM -> ``Interrupted`` in the main thread, and an exit deadline.

    ``status`` (set once the command knows what it is doing) says what is stored, e.g.
    "37 of 100 batches stored"; ``hint`` says how to go on. ``exit`` prints the one line,
    stops every child process and ends the process: the CLI calls it when the unwinding
    reaches it, the deadline when the main thread is still waiting for something.

    The kernel hands a process's signal to any of its threads. Python runs the handler in
    the main thread only, when that thread next runs Python code, so a main thread blocked
    waiting for a batch would not hear of a signal taken by a worker thread until the batch
    ended. Python's wakeup file descriptor sees every signal whichever thread takes it: a
    watcher thread reading it starts the deadline at once and re-sends the signal to the
    main thread, which wakes it.
    """

    def __init__(self, hint: str = "re-run the same command to resume"):
        self.hint = hint
        self.status: Callable[[], str] | None = None
        self.signum: int | None = None
        self._raised = False
        self._woken = False
        self._stderr = sys.stderr
        self._previous: dict[int, object] = {}
        self._previous_fd: int | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._begin_lock = threading.RLock()  # RLock: a handler may run inside the main thread's own call
        self._exit_lock = threading.Lock()

    def __enter__(self) -> Interruption:
        global _active
        if threading.current_thread() is not threading.main_thread():  # signal handlers live there only
            return self
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        self._wakeup = socket.socketpair()
        self._wakeup[1].setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._wakeup[1].fileno(), warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(self._wakeup[0],), name="amortval-signal-watch",
                         daemon=True).start()
        _active = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _active
        if self._wakeup is None:
            return
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._wakeup[1].close()  # the watcher reads end-of-file and ends
        self._wakeup = None
        if _active is self:
            _active = None

    def _on_signal(self, signum: int, frame: object) -> None:
        """The Python handler, in the main thread: begin stopping, unwind with ``Interrupted``."""
        if self._raised:
            return  # already unwinding; the deadline ends the process
        self._raised = True
        self._begin(signum)
        raise Interrupted(signum)

    def _watch(self, reader: socket.socket) -> None:
        with reader:
            while data := reader.recv(64):
                for signum in data:
                    if signum in SIGNALS:
                        self._begin(signum)
                        if not self._raised and not self._woken:
                            self._woken = True
                            signal.pthread_kill(threading.main_thread().ident, signum)

    def _begin(self, signum: int) -> None:
        """The first signal only: silence everything but the one line, start the deadline."""
        with self._begin_lock:
            if self.signum is not None:
                return
            self.signum = signum
            # From here on the line is the whole story: no crash report, no traceback, no
            # "Error logging to API" from Prefect's log shipper once its server is gone.
            logging.disable(logging.CRITICAL)
            self._stderr, sys.stderr = sys.stderr, open(os.devnull, "w")
            threading.Thread(target=self._deadline, name="amortval-stop-deadline", daemon=True).start()

    def _deadline(self) -> None:
        time.sleep(GRACE_SECONDS)
        self.exit()

    def exit(self) -> NoReturn:
        """Print the one line, stop every child process, end the process: 128 + the signal.

        ``os._exit``, not ``sys.exit``: interpreter shutdown would still wait for the thread
        pool's batches in flight and ship Prefect's logs to the API server just stopped.
        What finished is committed, and an open store is as safe as after SIGKILL. The
        lock makes the second caller (CLI or deadline) wait for the first, which exits.
        """
        with self._exit_lock:
            try:
                sys.stdout.flush()
                print(f"amortval: error: {self.message()}", file=self._stderr, flush=True)
            except (OSError, ValueError):  # a closed terminal or pipe: still stop the children and exit
                pass
            stop_children()
            os._exit(128 + (self.signum or signal.SIGTERM))

    def message(self) -> str:
        name = signal.Signals(self.signum).name if self.signum else "a signal"
        return "; ".join(part for part in (f"interrupted ({name})", self._status(), self.hint) if part)

    def _status(self) -> str | None:
        """``status()``, given at most ``STATUS_SECONDS``: the line must come whatever the store does."""
        if self.status is None:
            return None
        found: list[str] = []

        def read() -> None:
            try:
                found.append(self.status())
            except Exception as error:
                found.append(f"stored work not counted ({type(error).__name__})")

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(STATUS_SECONDS)
        return found[0] if found else "stored work not counted (the store did not answer)"


def reclaim_sigterm() -> None:
    """Inside a flow run started by the CLI, take SIGTERM back from Prefect.

    Prefect installs its own SIGTERM handler for the length of a flow run; after it, the
    thread pool waits for every batch in flight. A no-op outside the CLI (a deployment's
    worker keeps Prefect's handling) and off the main thread. Prefect restores the
    previous handler, the CLI's, when the flow run ends.
    """
    if _active is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _active._on_signal)


def stop_children() -> None:
    """Terminate every descendant process (Prefect's API server, Dask workers), then kill
    the ones still alive after ``CHILD_STOP_SECONDS``."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=CHILD_STOP_SECONDS)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=1.0)
