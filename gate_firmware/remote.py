"""The gate controller from another process on the same Pi: JSON lines over a Unix socket.

``parkgate gate serve --config FILE --socket PATH`` runs a :class:`GateController` and a
:class:`GateServer`; another process (the edge) holds a :class:`GateClient`, which offers the
controller's own surface: ``open(reason)``, ``close_barrier(reason)``, ``heartbeat()``,
``state``, ``counts``, ``snapshot()``, ``close()``.

Protocol, one UTF-8 JSON object per line (at most 64 KiB) each way:

- client to server: ``{"cmd": "open", "id": "c1", "reason": "space_free"}``; ``cmd`` is ``open``,
  ``close`` (lower the barrier), ``heartbeat`` (the edge application is alive; see
  ``edge_heartbeat_s``) or ``snapshot``; ``id`` (string or number) comes back in the reply.
- server to client: ``{"type": "snapshot", ...}`` on connecting and after every step of the
  machine (the fields of :meth:`Snapshot.as_dict`: ``state``, ``motor_open``, ``motor_close``,
  ``pulse``, ``lamp``, ``light``, ``buzzer``, ``count_in``, ``count_out``, ``tailgates``,
  ``reversals``, ``faults``, ``event``, ``fault``, ``alarms``, ``auto_close``, ``trigger``,
  ``inputs``, ``at``), and one reply per command, after the snapshots it caused:
  ``{"type": "reply", "id": "c1", "ok": true, "snapshot": {...}}`` or ``{"type": "reply", "id":
  "c1", "ok": false, "error": "unknown command 'lift' (expected open, close, heartbeat, snapshot)"}``.

A line that is not JSON, not a command, or too long gets an ``ok: false`` reply, is counted by
reason in :attr:`GateServer.rejected` and logged; the connection goes on (a too-long line closes
it). A client that does not read its snapshots is dropped rather than allowed to hold the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import stat
import threading
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gate_firmware.closing import Closing
from gate_firmware.controller import GateController, Snapshot
from gate_firmware.machine import Counts
from gate_firmware.states import BarrierState

log = logging.getLogger(__name__)

LINE_LIMIT = 64 * 1024
_WRITE_BUFFER_LIMIT = 1024 * 1024  # a client further behind than this is dropped
_JOIN_TIMEOUT_S = 5.0


class GateCommandError(RuntimeError):
    """A command the gate server refused or never answered."""


class Command(BaseModel):
    """One line from a client."""

    model_config = ConfigDict(extra="forbid")

    cmd: str = Field(description="what to do: open, close, heartbeat or snapshot")
    id: str | int | None = Field(default=None, description="echoed in the reply")
    reason: str = Field(default="", max_length=200, description="why; logged by the controller")


class GateServer:
    """Serves one :class:`GateController` on a Unix socket. Pass :meth:`publish` as the
    controller's ``on_change``, then :meth:`serve` until ``stop`` is set."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rejected: Counter[str] = Counter()
        self._outbox: deque[Snapshot] = deque()  # snapshots from any thread, in step order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._controller: GateController | None = None
        self.ready = threading.Event()

    def publish(self, snapshot: Snapshot) -> None:
        """The controller's ``on_change``: queue the snapshot for every client (any thread)."""
        self._outbox.append(snapshot)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._flush)

    def serve(self, controller: GateController, stop: threading.Event) -> None:
        """Listen on :attr:`path` until ``stop`` is set (blocks; run it in its own thread if needed)."""
        self._controller = controller
        self._handlers: dict[str, Callable[[str], None]] = {
            "open": controller.open,
            "close": controller.close_barrier,
            "heartbeat": lambda _reason: controller.heartbeat(),
            "snapshot": lambda _reason: None,  # the reply carries the snapshot
        }
        asyncio.run(self._main(stop))

    # -- inside ---------------------------------------------------------------------------------

    async def _main(self, stop: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        _remove_stale_socket(self.path)
        # bound and listening under a temporary name, then renamed: a client never finds the
        # socket file before the server accepts on it
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        temporary.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(temporary))
        os.chmod(temporary, 0o660)  # the edge runs as another user of the same group
        sock.listen(16)
        os.rename(temporary, self.path)
        server = await asyncio.start_unix_server(self._client, sock=sock, limit=LINE_LIMIT)
        log.info("gate server listening on %s", self.path)
        self._outbox.clear()  # a new client gets the current snapshot first anyway
        self.ready.set()
        try:
            await asyncio.to_thread(stop.wait)
        finally:
            # Stop accepting first, and let a connection accepted just now attach to the server:
            # closing the server under it leaks its socket (Python 3.11).
            for sock in server.sockets:
                self._loop.remove_reader(sock.fileno())
            await asyncio.sleep(0)
            server.close()
            await server.wait_closed()
            await self._close_clients()
            self._loop = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            log.info("gate server stopped")

    async def _close_clients(self) -> None:
        """Close every connection and let its task finish, including one accepted just now."""
        me = asyncio.current_task()
        deadline = asyncio.get_running_loop().time() + _JOIN_TIMEOUT_S
        while others := {task for task in asyncio.all_tasks() if task is not me}:
            for writer in list(self._clients):
                writer.close()  # its reader sees the end and its task finishes
            if asyncio.get_running_loop().time() > deadline:
                log.warning("gate server: %d connection task(s) did not finish", len(others))
                return
            await asyncio.wait(others, timeout=0.05)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._controller is not None
        self._clients.add(writer)
        self._send(writer, {"type": "snapshot", **self._controller.snapshot().as_dict()})
        try:
            while not writer.is_closing():
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    self._reject(writer, None, "too_large", f"line longer than {LINE_LIMIT} bytes")
                    break
                if not line:
                    break
                if line.strip():
                    self._handle(writer, line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _handle(self, writer: asyncio.StreamWriter, line: bytes) -> None:
        assert self._controller is not None
        try:
            data = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            self._reject(writer, None, "json", f"not JSON: {err}")
            return
        raw_id = data.get("id") if isinstance(data, dict) else None
        try:
            command = Command.model_validate(data)
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "command"
            self._reject(
                writer,
                raw_id if isinstance(raw_id, str | int) else None,
                "schema",
                f"{where}: {first['msg']}",
            )
            return
        handler = self._handlers.get(command.cmd)
        if handler is None:
            expected = ", ".join(self._handlers)
            self._reject(
                writer,
                command.id,
                "unknown_command",
                f"unknown command {command.cmd!r} (expected {expected})",
            )
            return
        try:
            handler(command.reason or f"remote command {command.id}")
        except RuntimeError as err:  # the controller is closed
            self._reject(writer, command.id, "refused", str(err))
            return
        self._flush()  # the snapshots this command caused go out before its reply
        reply = {
            "type": "reply",
            "id": command.id,
            "ok": True,
            "snapshot": self._controller.snapshot().as_dict(),
        }
        self._send(writer, reply)

    def _reject(
        self, writer: asyncio.StreamWriter, command_id: str | int | None, reason: str, error: str
    ) -> None:
        self.rejected[reason] += 1
        log.warning("gate server: rejected a client line (%s): %s", reason, error)
        self._send(writer, {"type": "reply", "id": command_id, "ok": False, "error": error})

    def _flush(self) -> None:
        while self._outbox:
            line = {"type": "snapshot", **self._outbox.popleft().as_dict()}
            for writer in list(self._clients):
                self._send(writer, line)

    def _send(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        if writer.is_closing():
            return
        transport = writer.transport
        if transport.get_write_buffer_size() > _WRITE_BUFFER_LIMIT:
            log.warning("gate server: dropping a client that does not read")
            self._clients.discard(writer)
            writer.close()
            return
        writer.write(json.dumps(message, ensure_ascii=False).encode() + b"\n")


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file left by a server that died; refuse if one still listens there."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise FileExistsError(f"another gate server is listening on {path}")


class GateClient(Closing):
    """The gate controller of another process, with the controller's surface.

    ``state``, ``counts`` and :meth:`snapshot` read the last snapshot the server sent (memory,
    no IO); :meth:`open`, :meth:`close_barrier` and :meth:`heartbeat` send a command and wait up to ``timeout``
    seconds for its reply, raising :class:`GateCommandError` if it was refused, unanswered, or the
    connection is gone. ``on_change`` is called with every snapshot, in the reader thread.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        timeout: float = 5.0,
        on_change: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self._timeout = timeout
        self._on_change = on_change
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(str(path))
            self._sock.settimeout(None)
        except BaseException:
            self._sock.close()
            raise
        self._file = self._sock.makefile("rb")
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._last: Snapshot | None = None
        self._have_first = threading.Event()
        self._connected = True
        self._reader = threading.Thread(target=self._read, name="gate-client", daemon=True)
        self._reader.start()
        if not self._have_first.wait(timeout):
            self.close()
            raise GateCommandError(f"no snapshot from the gate server at {path} within {timeout} s")

    # -- the controller's surface ---------------------------------------------------------------

    def open(self, reason: str = "") -> None:
        """Raise the barrier for one vehicle."""
        self._command("open", reason)

    def close_barrier(self, reason: str = "") -> None:
        """Lower the barrier now, unless something is in its path."""
        self._command("close", reason)

    def heartbeat(self) -> None:
        """Tell the controller this process is alive (its ``edge_heartbeat_s``)."""
        self._command("heartbeat", "")

    @property
    def state(self) -> BarrierState:
        return self.snapshot().state

    @property
    def counts(self) -> Counts:
        return self.snapshot().counts

    @property
    def connected(self) -> bool:
        return self._connected

    def snapshot(self) -> Snapshot:
        with self._lock:
            assert self._last is not None
            return self._last

    def close(self) -> None:
        """Disconnect. Safe to call again."""
        self._connected = False
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self._reader is not threading.current_thread():
            self._reader.join(self._timeout)
        self._file.close()

    # -- inside ---------------------------------------------------------------------------------

    def _command(self, cmd: str, reason: str) -> None:
        command_id = f"c{next(self._ids)}"
        done, reply = threading.Event(), list[dict[str, Any]]()
        with self._lock:
            if not self._connected:
                raise GateCommandError("not connected to the gate server")
            self._waiting[command_id] = (done, reply)
        line = (
            json.dumps({"cmd": cmd, "id": command_id, "reason": reason}, ensure_ascii=False).encode() + b"\n"
        )
        try:
            self._sock.sendall(line)
            if not done.wait(self._timeout):
                raise GateCommandError(f"{cmd}: no reply from the gate server within {self._timeout} s")
        except OSError as err:
            raise GateCommandError(f"{cmd}: connection to the gate server failed: {err}") from err
        finally:
            with self._lock:
                self._waiting.pop(command_id, None)
        if not reply or not reply[0].get("ok"):
            error = reply[0].get("error") if reply else "the connection closed before the reply"
            raise GateCommandError(f"{cmd} refused: {error}")

    def _read(self) -> None:
        try:
            for line in self._file:
                self._received(json.loads(line))
        except (OSError, ValueError) as err:
            if self._connected:
                log.warning("gate client: connection lost: %s", err)
        finally:
            with self._lock:
                self._connected = False
                waiting = list(self._waiting.values())
            for done, _reply in waiting:
                done.set()  # with no reply: the command fails

    def _received(self, message: dict[str, Any]) -> None:
        kind = message.pop("type", None)
        if kind == "reply":
            with self._lock:
                waiter = self._waiting.get(str(message.get("id")))
            if waiter is not None:
                waiter[1].append(message)
                waiter[0].set()
            return
        if kind != "snapshot":
            return
        snap = Snapshot.from_dict(message)
        with self._lock:
            self._last = snap
        self._have_first.set()
        if self._on_change is not None:
            try:
                self._on_change(snap)
            except Exception:
                log.exception("gate client: on_change failed for %s", snap)
