"""systemd's sd_notify protocol, spoken directly: one datagram to $NOTIFY_SOCKET per message.

See sd_notify(3): the socket is an AF_UNIX datagram socket; a leading '@' means the abstract
namespace. Without NOTIFY_SOCKET (not run by systemd with Type=notify) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """READY=1, STATUS=..., WATCHDOG=1 and STOPPING=1 for systemd; silent when not under systemd."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address or None
        self._socket = None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        # Ping at half the interval systemd waits, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and mine else None
        self._last_ping = 0.0
        self._ready = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message.encode(), self._address)
        except OSError:
            pass  # systemd gone or socket unreachable: never a reason to stop classifying

    def ready(self, status: str) -> None:
        """READY=1 (once: a daemon paused at start by a full disk is ready before its model loop starts)."""
        self.send(f"STATUS={status}" if self._ready else f"READY=1\nSTATUS={status}")
        self._ready = True

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        """WATCHDOG=1 at most every half watchdog interval; call it from the processing loop."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self.send("WATCHDOG=1")
            self._last_ping = now

    def stopping(self) -> None:
        self.send("STOPPING=1")
