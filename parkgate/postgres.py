"""Running a private PostgreSQL server on a free loopback port (tests, ``bench ingest --db postgres``).

Like :mod:`parkgate.broker` does for Mosquitto: Debian's server binaries (package ``postgresql``,
``/usr/lib/postgresql/<major>/bin``), a fresh cluster (``initdb``) in a temporary folder, the server
listening on 127.0.0.1 only with its Unix socket inside that folder, and one superuser that logs in
with a random password (SCRAM), so other local users cannot use it. ``url()`` is a SQLAlchemy URL
for psycopg 3.

PostgreSQL refuses to run as root. Under root the cluster belongs to the ``postgres`` system user
that the Debian package creates: the folder is handed to it and ``initdb`` and the server run as
that user (``subprocess`` switches user and group before exec; no ``su``/``runuser`` in between, so
signals reach the server itself).

The server's durability settings are PostgreSQL's defaults (``fsync``, ``synchronous_commit`` on)
unless ``settings`` says otherwise: ``bench ingest`` keeps them, since the collector acknowledges a
message only once its transaction is durable. The test fixture turns them off (see
``TEST_SETTINGS``): the tests check what is stored, not what survives a power cut.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from parkgate.broker import free_port, stop_process

logger = logging.getLogger(__name__)

DEBIAN_ROOT = Path("/usr/lib/postgresql")

# Settings for every temporary server: local only, nothing the tests or the benchmark do not need.
BASE_SETTINGS: dict[str, str] = {
    "max_connections": "50",
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
    "log_checkpoints": "off",
}

# For throwaway test clusters only: commits do not wait for the disk. A committed transaction is
# still visible to every other session at once; only an OS crash could lose it.
TEST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


class PostgresError(RuntimeError):
    """The PostgreSQL server is missing or did not start."""


def postgres_bindir() -> Path:
    """The folder with ``initdb`` and ``postgres``: ``$PARKGATE_PG_BINDIR``, the newest Debian major
    version under /usr/lib/postgresql, or wherever ``initdb`` is on the PATH."""
    override = os.environ.get("PARKGATE_PG_BINDIR")
    candidates = [Path(override)] if override else []
    if DEBIAN_ROOT.is_dir():
        majors = [p for p in DEBIAN_ROOT.iterdir() if re.fullmatch(r"\d+(\.\d+)?", p.name)]
        majors.sort(key=lambda p: tuple(int(n) for n in p.name.split(".")), reverse=True)
        candidates += [p / "bin" for p in majors]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise PostgresError(
        "the PostgreSQL server is not installed (Debian: apt-get install postgresql; "
        "deploy/setup.sh --dev does it), or set PARKGATE_PG_BINDIR to the folder with initdb"
    )


def postgres_available() -> bool:
    try:
        postgres_bindir()
    except PostgresError:
        return False
    return True


def _die_with_parent_fast() -> None:
    """``preexec_fn``: Linux sends the server SIGINT (fast shutdown) when its parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


class Postgres:
    """A temporary PostgreSQL cluster and server. Use as a context manager or start()/stop().

    ``workdir`` (default: a new temporary folder, removed by stop()) holds the cluster (``data``),
    the socket folder (``run``) and the server log (``postgres.log``); under root it must be a
    folder the ``postgres`` user can reach (not inside pytest's private ``tmp_path``).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        database: str = "parkgate",
        user: str = "parkgate",
        settings: Mapping[str, str] | None = None,
        run_as: str = "postgres",
    ) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="parkgate-pg-"))
        self.host = host
        self.port = port or free_port(host)
        self.database = database
        self.user = user
        self.password = secrets.token_urlsafe(24)
        self.settings = {**BASE_SETTINGS, **(settings or {})}
        self.run_as = run_as
        self.data = self.workdir / "data"
        self.socket_dir = self.workdir / "run"
        self.log = self.workdir / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- URLs ------------------------------------------------------------------------------------
    def url(self, database: str | None = None) -> str:
        """SQLAlchemy URL (psycopg 3) of ``database`` (default: the one created at start)."""
        return (
            f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/"
            f"{database or self.database}"
        )

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> Postgres:
        bindir = postgres_bindir()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        account = self._account()
        if account is not None:
            for path in (self.workdir, self.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._initdb(bindir, account)
        args = [str(bindir / "postgres"), "-D", str(self.data), "-h", self.host, "-p", str(self.port)]
        args += ["-k", str(self.socket_dir)]
        for key, value in self.settings.items():
            args += ["-c", f"{key}={value}"]
        with self.log.open("ab") as log:
            # Own session: a terminal's Ctrl-C must not stop the server before its clients are done.
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=log, cwd=self.workdir, start_new_session=True,
                preexec_fn=_die_with_parent_fast, **self._as_account(account),
            )  # fmt: skip
        try:
            self._wait_ready(timeout)
            with self._admin() as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        except BaseException:
            self.stop()
            raise
        logger.info("postgresql listening on %s:%d (pid %d)", self.host, self.port, self.proc.pid)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT: clients disconnected, a checkpoint, exit); the folder is removed
        if this object made it."""
        stop_process(self.proc, timeout, signal.SIGINT)
        self.proc = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------------------
    def _account(self) -> pwd.struct_passwd | None:
        """The user the server runs as when we are root (None: run as ourselves)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self.run_as)
        except KeyError:
            raise PostgresError(
                f"PostgreSQL refuses to run as root and there is no {self.run_as!r} user to run it as "
                "(Debian's postgresql package creates 'postgres')"
            ) from None

    @staticmethod
    def _as_account(account: pwd.struct_passwd | None) -> dict[str, Any]:
        if account is None:
            return {}
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def _initdb(self, bindir: Path, account: pwd.struct_passwd | None) -> None:
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        args = [
            str(bindir / "initdb"), "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                args, cwd=self.workdir, capture_output=True, timeout=120, check=False,
                **self._as_account(account),
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
            raise PostgresError(f"initdb failed (exit {done.returncode}):\n{out}")

    def _admin(self) -> Any:
        """An autocommit connection to the maintenance database, as the superuser."""
        import psycopg

        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            dbname="postgres", autocommit=True, connect_timeout=5,
        )  # fmt: skip

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise PostgresError(f"postgres exited at start:\n{self._log_tail()}")
            try:
                with self._admin():
                    return
            except psycopg.OperationalError as err:
                if time.monotonic() > deadline:
                    raise PostgresError(
                        f"postgres did not accept connections on {self.host}:{self.port} within "
                        f"{timeout} s ({err}):\n{self._log_tail()}"
                    ) from err
                time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"
