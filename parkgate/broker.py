"""Running a private Mosquitto broker on a free loopback port (demo, tests, benchmarks).

The config is generated from the project's template (``mosquitto.conf`` beside this file); the
broker keeps its persistence file in the given folder, so a restarted broker keeps queued
messages and retained availability like a production one.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import logging
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """Mosquitto is missing or did not start."""


PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """``preexec_fn`` for children: Linux sends them ``sig`` when the parent dies, however it dies."""
    # Not Linux: no prctl; the parent's own stop() still ends the children.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def stop_process(
    proc: subprocess.Popen[bytes] | None, timeout: float = 5.0, sig: int = signal.SIGTERM
) -> None:
    """Ask a child to stop with ``sig``; SIGKILL it if it has not exited within ``timeout`` s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("pid %d did not stop within %.0f s; killing it", proc.pid, timeout)
        proc.kill()
        proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    if not found:
        raise BrokerError(
            "mosquitto is not installed (Debian: apt-get install mosquitto; deploy/setup.sh does it)"
        )
    return found


class Mosquitto:
    """A Mosquitto process with a generated config. Use as a context manager or start()/stop()."""

    def __init__(self, workdir: Path, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        template = resources.files("parkgate").joinpath("mosquitto.conf").read_text(encoding="utf-8")
        self.conf.write_text(
            template.format(
                host=self.host, port=self.port, user=getpass.getuser(), data=self.workdir.resolve()
            ),
            encoding="utf-8",
        )
        return self.conf

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.write_config()
        with self.log.open("ab") as log:
            # Own session: a terminal's Ctrl-C must not kill the broker before its clients are done.
            self.proc = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.conf)],
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BrokerError(
                f"mosquitto did not listen on {self.host}:{self.port} within {timeout} s:\n{tail}"
            )
        logger.info("mosquitto listening on %s:%d (pid %d)", self.host, self.port, self.proc.pid)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self.proc, timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would (for fault tests)."""
        if self.proc:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def set_directives(text: str, values: Mapping[str, str]) -> str:
    """A mosquitto.conf ``text`` with the value of each directive in ``values`` replaced.

    Each named directive must appear exactly once, uncommented; otherwise BrokerError, so a config
    that drifts from what the caller rewrites fails loudly instead of running with a production path.
    """
    lines = text.splitlines()
    found = dict.fromkeys(values, 0)
    for i, line in enumerate(lines):
        words = line.split(None, 1)
        if words and words[0] in values:
            lines[i] = f"{words[0]} {values[words[0]]}"
            found[words[0]] += 1
    wrong = [f"{key} ({n} times)" for key, n in found.items() if n != 1]
    if wrong:
        raise BrokerError(f"config must set each of these once, uncommented: {', '.join(wrong)}")
    return "\n".join(lines) + "\n"


class SecureMosquitto(Mosquitto):
    """Mosquitto running a production config file on a free loopback port, with files from a folder.

    ``config`` is used as written (TLS, ``allow_anonymous false``, password file, ACL) except for
    the directives that name the port, the OS user and the persistence folder, and those in
    ``files`` (for example ``cafile``, ``certfile``, ``keyfile``, ``password_file``, ``acl_file``),
    which point at the given paths. Used by tests/test_broker_security.py with
    deploy/mosquitto/mosquitto.conf.
    """

    def __init__(
        self,
        workdir: Path,
        config: Path,
        files: Mapping[str, Path],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(workdir, port=port, host=host)
        self.source = Path(config)
        self.files = dict(files)

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        values = {
            "listener": f"{self.port} {self.host}",
            "user": getpass.getuser(),
            "persistence_location": f"{self.workdir.resolve()}/",
            **{key: str(Path(path).resolve()) for key, path in self.files.items()},
        }
        text = self.source.read_text(encoding="utf-8")
        self.conf.write_text(set_directives(text, values), encoding="utf-8")
        return self.conf
