"""Ctrl-C and SIGTERM end a command the same way: KeyboardInterrupt, so one cleanup path serves both (the CLI
prints one line and exits 130)."""

from __future__ import annotations

import signal
import threading


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Route SIGTERM to KeyboardInterrupt. Ray's driver installs its own handler in ray.init (it exits at once,
    skipping cleanup), so this is called again after connecting."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
