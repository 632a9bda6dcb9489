"""Telling systemd how a service is doing (``sd_notify``), with the standard library only.

The units in ``deploy/systemd/`` are ``Type=notify`` with ``WatchdogSec=30``: systemd considers
the service started only when it says ``READY=1``, and restarts it when ``WATCHDOG=1`` stops
arriving. Outside systemd (no ``$NOTIFY_SOCKET``: a terminal, the demo, tests) every function
here does nothing and returns False. A failure to send is logged once and never raised: losing a
notification must not stop a gate.

How a service uses it::

    from parkgate import systemd

    cfg = load_config(...)                      # a bad config exits 78 before READY=1
    ...connect, open the outbox, start threads...
    systemd.notify_ready("gate L01-in: waiting for cars")
    interval = systemd.watchdog_interval() or 10.0   # half of WatchdogSec, or None outside systemd
    while not stop.wait(interval):
        if healthy():                           # only ping while the main loop really works
            systemd.watchdog_ping()
        systemd.notify_status(f"{stored} events stored")
    systemd.notify_stopping()

API: :func:`notify_ready`, :func:`watchdog_ping`, :func:`notify_stopping`, :func:`notify_status`,
:func:`watchdog_interval`, and :func:`notify` for any other fields (``RELOADING=1``,
``EXTEND_TIMEOUT_USEC=...``). The protocol is documented in ``man sd_notify``.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)

_warned = False


def _address(value: str) -> str | None:
    """A ``$NOTIFY_SOCKET`` value as an AF_UNIX address ('@' starts an abstract socket name)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and other transports are not used on the machines ParkGate runs on


def notify(*fields: str) -> bool:
    """Send ``KEY=VALUE`` fields in one datagram to ``$NOTIFY_SOCKET``; True if it was sent.

    Raises ValueError for a field that is not ``KEY=VALUE`` on one line (a bug in the caller,
    so it shows outside systemd too); every other failure is logged once and returns False.
    """
    bad = [f for f in fields if "=" not in f or "\n" in f]
    if bad:
        raise ValueError(f"sd_notify fields must be KEY=VALUE on one line, got {bad!r}")
    target = os.environ.get("NOTIFY_SOCKET")
    if not target or not fields:
        return False
    address = _address(target)
    if address is None:
        _warn_once("cannot notify systemd: unsupported NOTIFY_SOCKET %r", target)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode("utf-8"))
    except OSError as err:
        _warn_once("cannot notify systemd at %s: %s", target, err)
        return False
    return True


def notify_ready(status: str | None = None) -> bool:
    """The service has started: config loaded, connections set up, loops running."""
    return notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))


def watchdog_ping() -> bool:
    """The service is alive; call at least every ``watchdog_interval()`` seconds."""
    return notify("WATCHDOG=1")


def notify_stopping(status: str | None = None) -> bool:
    """The service is shutting down (so systemd does not take a slow stop for a hang)."""
    return notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))


def notify_status(status: str) -> bool:
    """A one-line status shown by ``systemctl status``."""
    return notify(f"STATUS={_one_line(status)}")


def watchdog_interval() -> float | None:
    """Half of the unit's ``WatchdogSec`` in seconds when this process is the one watched, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


def _warn_once(message: str, *args: object) -> None:
    global _warned
    if not _warned:
        logger.warning(message, *args)
        _warned = True


def _one_line(text: str) -> str:
    return " ".join(text.split())
