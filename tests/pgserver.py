"""A throw-away PostgreSQL server for the tests: a new cluster in a temp directory, listening on
a free loopback port, run as the `postgres` user when the tests run as root (initdb and postgres
refuse root), stopped by PID and removed at the end.

Needs Debian's `postgresql` package (scripts/bootstrap.sh installs it); `available()` says why
not where it is missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def available() -> str | None:
    """None when a server can be started here, else why not."""
    if bindir() is None:
        return "Debian package postgresql is not installed (no /usr/lib/postgresql/*/bin/initdb; scripts/bootstrap.sh installs it)"
    return None


def _as_user() -> tuple[list[str], str | None]:
    """The argv prefix that drops root (setpriv execs in place, so the PID we hold is the
    server's own), and the user the files must belong to."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root and there is no postgres user to run the server as") from None
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"], "postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    root: Path
    port: int
    proc: subprocess.Popen
    user: str = "caskit"

    def url(self, db: str = "caskit") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def createdb(self, name: str) -> str:
        """A fresh database in the cluster; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: ends sessions, checkpoints, exits
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> Server:
    bd = bindir()
    assert bd is not None, available()
    prefix, owner = _as_user()
    root = Path(tempfile.mkdtemp(prefix="caskit-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if owner:
        for p in (root, sock):
            shutil.chown(p, owner, owner)
    init = subprocess.run(prefix + [str(bd / "initdb"), "-D", str(data), "-U", "caskit", "-A", "trust", "--no-sync",
                                    "-E", "UTF8", "--locale", "C"],
                          capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr[-2000:]}")
    port = _free_port()
    log = open(root / "server.log", "ab")
    proc = subprocess.Popen(prefix + [str(bd / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sock),
                                      "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    server = Server(root, port, proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    import psycopg
    while True:  # ready once it accepts a connection (nothing to wait on but trying)
        if proc.poll() is not None:
            text = (root / "server.log").read_text(errors="replace")[-2000:]
            server.stop()
            raise RuntimeError(f"postgres exited {proc.returncode}: {text}")
        try:
            with psycopg.connect(server.url("postgres"), connect_timeout=2):
                break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"postgres did not accept connections within {START_TIMEOUT_S:.0f} s") from None
            time.sleep(0.1)
    with psycopg.connect(server.url("postgres"), autocommit=True) as c:
        c.execute('CREATE DATABASE "caskit"')
    return server


@contextlib.contextmanager
def running():
    s = start()
    try:
        yield s
    finally:
        s.stop()
