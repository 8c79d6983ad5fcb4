"""QMP through the qemu.qmp library, with every exchange kept in the cell's log."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from qemu.qmp import ExecuteError, QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from .errors import QmpCommandError, QmpLost

__all__ = ["QmpClient", "QmpCommandError", "QmpLost"]




class QmpClient:
    def __init__(self, sock: socket.socket, log_path: Path, timeout: float = 30.0):
        self._log = open(log_path, "a")
        self._qmp = QEMUMonitorProtocol(sock)
        self._qmp.settimeout(timeout)
        try:
            greeting = self._qmp.connect(negotiate=True)
        except (QMPError, OSError, EOFError) as e:
            self._log.close()
            raise QmpLost(f"QMP handshake failed: {e!r}") from e
        self._write({"greeting": greeting})

    def _write(self, entry: dict) -> None:
        self._log.write(json.dumps({"t": round(time.time(), 3), **entry}, default=str) + "\n")
        self._log.flush()

    def execute(self, command: str, **args: Any) -> Any:
        self._write({"send": {"execute": command, "arguments": args}})
        try:
            ret = self._qmp.cmd(command, **args)
        except ExecuteError as e:
            self._write({"error": str(e)})
            raise QmpCommandError(command, args, str(e)) from e
        except (QMPError, OSError, EOFError, TimeoutError) as e:
            self._write({"lost": repr(e)})
            raise QmpLost(f"QMP {command}: connection lost or timed out: {e!r}") from e
        self._write({"recv": ret})
        return ret

    def hmp(self, command_line: str) -> str:
        return str(self.execute("human-monitor-command", **{"command-line": command_line}))

    def events(self) -> list[dict]:
        evs = self._qmp.get_events(wait=False)
        self._qmp.clear_events()
        for e in evs:
            self._write({"event": e})
        return evs

    def close(self) -> None:
        try:
            self._qmp.close()
        except Exception:  # closing a connection to a QEMU that already died
            pass
        finally:
            self._log.close()
