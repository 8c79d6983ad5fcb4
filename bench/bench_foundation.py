#!/usr/bin/env python3
"""caskit foundation benchmark: what the harness costs on top of QEMU, and how -n 2 scales.

Part 1, one cell (the first cell of the quick matrix), repeated --repeat times, the four kinds
rotated so that drift in the machine's load hits them alike:
  raw     qemu-system-ppc64 with the argv caskit used for the cell (from cells/<id>/qemu-argv.txt),
          console chardev on stdio instead of a unix socket, no QMP, no -S; timed from Popen to
          the line "CASKIT-READY ..." on the console, then SIGKILLed by PID.
  inproc  harness.cellrun.run_cell() in this process, the code path of one `caskit run` cell,
          with the harness's methods wrapped by timers (in this process only: no harness file is
          touched) to break the cell into phases: lease, argv, launch (spawn, socket wait, console
          and QMP attach), qom-get + cont, boot to the ready marker, ck-observe, info pic, shutdown.
  cli     a whole `caskit run ONE.yaml --out DIR` of a one-cell matrix file: process start to exit,
          the cell's own duration_s, and phases read from the cell's qmp.jsonl timestamps.
  raw_pair  two raw QEMUs started together, timed until both are ready: what two guests side by
          side cost on this machine, hence the ceiling for the speedup of `-n 2` (2 * raw / pair).
Then the fixed costs of every `caskit run`: interpreter and imports, and `caskit matrix` (host probe).
Part 2: the quick matrix (configs/matrices/quick.yaml) with `caskit run -n 1` and `-n 2`, each into
its own --out directory: wall times, speedup t1/t2, per-cell median duration_s.

Writes bench/results/latest.json (and a time-stamped copy) and prints a table. Leaves no QEMU
running: every QEMU it starts is killed by PID and checked with pgrep at the end.

    .venv/bin/python bench/bench_foundation.py [--repeat N] [--skip-matrix] [--private-locks]
                                               [--wait-quiet S] [--keep] [--smoke] [--json FILE]

--smoke: the smallest real run of both parts: part 1 once (one sample of each kind, the cli
sample being the warm-up run itself), the fixed costs once, and part 2's figures taken from that
same run (a `caskit run -n 1` of the one-cell matrix) instead of the quick matrix. The figures go
to a temporary file unless --json says where (never bench/results/); the exit status is 1 unless
every sample was taken (raw QEMU ready, every caskit cell PASS).

The machine must be otherwise idle for the figures to mean anything; the script records the load
average and the number of other QEMU processes around every sample and says when there were any.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import _smoke  # noqa: E402

VENV_BIN = Path(sys.executable).parent
CASKIT = str(VENV_BIN / "caskit") if (VENV_BIN / "caskit").exists() else None
READY_RE = re.compile(rb"CASKIT-READY kit=\S+ cpus=\d+")
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_RATIO = 1.05
TARGET_SPEEDUP = 1.85

# Part 1's warm-up `caskit run` (a `-n 1` run of the one-cell matrix): what --smoke gives part 2.
WARMUP: dict = {}

# Everything this script starts, so that it can be stopped by PID whatever happens.
OWN_PIDS: set[int] = set()  # raw QEMUs
OWN_GROUPS: set[int] = set()  # `caskit run` process groups (the CLI and its pytest workers)
OWN_TAGS: set[str] = set()  # QEMU -name tag prefixes of caskit runs started here ("caskit:<run-id>:")


# ---------------------------------------------------------------------------------------------
# small helpers


def med(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def rnd(x, n=3):
    return None if x is None else round(x, n)


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a live process (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def qemu_processes() -> list[tuple[int, str]]:
    """(pid, cmdline) of every qemu-system-* on the machine, via pgrep."""
    r = subprocess.run(["pgrep", "-a", "qemu-system"], capture_output=True, text=True)
    out = []
    for line in r.stdout.splitlines():
        pid, _, cmd = line.partition(" ")
        if pid.isdigit() and int(pid) != os.getpid():
            out.append((int(pid), cmd))
    return out


def is_own(pid: int, cmd: str) -> bool:
    return pid in OWN_PIDS or any(t in cmd for t in OWN_TAGS)


def load_snapshot() -> dict:
    """Machine load at this moment: what else competes for the CPUs."""
    foreign = [(p, c) for p, c in qemu_processes() if not is_own(p, c)]
    return {"loadavg_1m": round(os.getloadavg()[0], 2), "foreign_qemu": len(foreign)}


def wait_quiet(limit: float, settle: float = 20.0) -> float:
    """Wait up to `limit` seconds until no other QEMU has run for `settle` seconds; returns the
    seconds waited."""
    t0 = quiet_since = time.monotonic()
    while time.monotonic() - t0 < limit:
        if load_snapshot()["foreign_qemu"]:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle:
            break
        time.sleep(2)
    return time.monotonic() - t0


def machine_info() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        if line.lower().startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    try:
        qv = subprocess.run(["qemu-system-ppc64", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        qv = None
    mem = next((l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")), "0")
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "qemu_version": qv, "kernel": platform.release(),
            "python": platform.python_version(), "mem_gib": round(int(mem) / 2**20, 1), "hostname": platform.node()}


def git_sha() -> str | None:
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "harness", "templates", "guest_tests"],
                           capture_output=True, text=True).stdout.strip()
    return (r.stdout.strip() + ("+dirty" if dirty else "")) or None


# ---------------------------------------------------------------------------------------------
# `caskit run` as a subprocess


def caskit_cmd() -> list[str]:
    return [CASKIT] if CASKIT else [sys.executable, "-m", "harness.cli"]


def run_caskit(args: list[str], out: Path, timeout: float, env: dict | None = None) -> dict:
    """One `caskit run`, timed from Popen to exit. Killed (by its process group id and the
    QEMU run tag) if it outlives `timeout`."""
    cmd = caskit_cmd() + ["run", *args, "--out", str(out)]
    cpu0 = children_cpu_s()
    t_wall0 = time.time()
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True, env=env)
    OWN_GROUPS.add(p.pid)
    try:
        text, _ = p.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        stop_caskit_run(p.pid, out)
        text, _ = p.communicate()
    wall = time.monotonic() - t0
    t_wall1 = time.time()
    OWN_GROUPS.discard(p.pid)
    note_run_tag(out)
    res = {"cmd": cmd, "exit": p.returncode, "wall_s": round(wall, 3), "t_start": t_wall0, "t_end": t_wall1,
           "cpu_s": round(children_cpu_s() - cpu0, 2), "timed_out": timed_out, "out": str(out),
           "output_tail": text[-1500:]}
    try:
        res["results"] = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        res["results"] = None
    return res


def note_run_tag(out: Path) -> str | None:
    try:
        rid = json.loads((out / "run.json").read_text())["id"]
    except (OSError, ValueError, KeyError):
        return None
    OWN_TAGS.add(f"caskit:{rid}:")
    return rid


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of pid (from the ppid field of /proc/*/stat)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def stop_caskit_run(pgid: int, out: Path) -> None:
    kids = descendants(pgid)  # QEMUs (the probe's too) run in sessions of their own
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)  # the CLI and its xdist workers: one group, ours
    for pid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    rid = note_run_tag(out)
    if rid:  # its QEMUs run in sessions of their own; they carry the run's tag
        from harness.hosts import kill_tagged
        kill_tagged(f"caskit:{rid}:")


def qmp_events(path: Path) -> list[dict]:
    out = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def cell_timeline(out: Path, rec: dict) -> dict:
    """Phases of one cell of a `caskit run`, from the wall-clock stamps in its qmp.jsonl.
    The cell's end is its result.json's mtime, its start that minus duration_s."""
    d = out / "cells" / rec["id"]
    try:
        end = (d / "result.json").stat().st_mtime
    except OSError:
        return {}
    start = end - rec["duration_s"]
    ev = qmp_events(d / "qmp.jsonl")
    tl = {"start": start, "end": end}
    pending = None
    for e in ev:
        if "greeting" in e:
            tl["greeting"] = e["t"]
        elif "send" in e:
            pending = e["send"]["execute"]
            if pending == "human-monitor-command":
                pending = "info_pic"
            tl.setdefault(f"{pending}_send", e["t"])
        elif ("recv" in e or "error" in e or "lost" in e) and pending:
            tl.setdefault(f"{pending}_recv", e["t"])
            pending = None
    ph = {}
    if "greeting" in tl:
        ph["start_to_qmp_greeting"] = tl["greeting"] - start  # lease, argv, spawn, socket wait, console attach
    if "cont_recv" in tl and "greeting" in tl:
        ph["qmp_setup_and_cont"] = tl["cont_recv"] - tl["greeting"]
    if "info_pic_send" in tl and "cont_recv" in tl:
        ph["boot_and_observe"] = tl["info_pic_send"] - tl["cont_recv"]
    if "info_pic_recv" in tl and "info_pic_send" in tl:
        ph["info_pic"] = tl["info_pic_recv"] - tl["info_pic_send"]
    if "quit_send" in tl:
        ph["shutdown_and_record"] = end - tl["quit_send"]
    return {"t": tl, "phases": {k: round(v, 3) for k, v in ph.items()}}


# ---------------------------------------------------------------------------------------------
# raw QEMU


SOCKDIR = "@SOCKDIR@"  # caskit's per-cell socket directory, gone after the warm-up run


def raw_argv(caskit_argv: list[str]) -> tuple[list[str], list[str]]:
    """caskit's argv with the console chardev on stdio, no QMP and no -S; all else identical.
    Any other argument naming caskit's (removed) socket directory gets a fresh one per process."""
    serial = next((caskit_argv[i + 1].split(":", 1)[1] for i, a in enumerate(caskit_argv[:-1])
                   if a == "-serial" and caskit_argv[i + 1].startswith("chardev:")), "con0")
    qmp = next((caskit_argv[i + 1] for i, a in enumerate(caskit_argv[:-1]) if a == "-qmp"), "")
    m = re.match(r"unix:(/.+)/[^/]+?(,|$)", qmp)
    sockdir = m.group(1) if m else None
    out, changes, i = [], [], 0
    while i < len(caskit_argv):
        a = caskit_argv[i]
        nxt = caskit_argv[i + 1] if i + 1 < len(caskit_argv) else ""
        if a == "-S":
            changes.append("dropped -S")
            i += 1
            continue
        if a == "-chardev" and nxt.startswith("socket,") and re.search(rf"(^|,)id={re.escape(serial)}(,|$)", nxt):
            cid = re.search(r"id=([^,]+)", nxt)
            new = f"stdio,id={cid.group(1) if cid else 'con0'},signal=off"
            out += [a, new]
            changes.append(f"-chardev {nxt} -> {new}")
            i += 2
            continue
        if a == "-qmp":
            changes.append(f"dropped -qmp {nxt}")
            i += 2
            continue
        if sockdir and sockdir in a:
            a = a.replace(sockdir, SOCKDIR)
            changes.append(f"socket directory in {a!r}: a fresh one per process")
        out.append(a)
        i += 1
    return out, changes


def materialize(argv: list[str], tmp: list[str]) -> list[str]:
    """The argv with a fresh socket directory, if it needs one (noted in `tmp` for removal)."""
    if not any(SOCKDIR in a for a in argv):
        return argv
    d = tempfile.mkdtemp(prefix="ck-bench-", dir="/tmp")  # short: unix socket paths < 108 bytes
    tmp.append(d)
    return [a.replace(SOCKDIR, d) for a in argv]


def run_raw_pair(argv: list[str], timeout: float, k: int = 2) -> dict:
    """k raw QEMUs started together: how long until all of them printed the ready line. This is
    the ceiling for `-n k` on this machine: whatever the harness does, k guests cannot boot
    faster side by side than this."""
    tmp: list[str] = []
    argvs = [materialize(argv, tmp) for _ in range(k)]
    t0 = time.monotonic()
    procs = [subprocess.Popen(a, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
             for a in argvs]
    OWN_PIDS.update(p.pid for p in procs)
    bufs = {p.stdout.fileno(): b"" for p in procs}
    ready: dict[int, float] = {}
    try:
        while len(ready) < k and time.monotonic() - t0 < timeout:
            fds = [fd for fd in bufs if fd not in ready]
            r, _, _ = select.select(fds, [], [], 0.5)
            for fd in r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    ready[fd] = float("nan")  # EOF: this QEMU died
                    continue
                bufs[fd] += chunk
                if READY_RE.search(bufs[fd]):
                    ready[fd] = time.monotonic() - t0
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            os.waitpid(p.pid, 0)
            p.returncode = -signal.SIGKILL
            OWN_PIDS.discard(p.pid)
            for f in (p.stdin, p.stdout):
                with contextlib.suppress(OSError):
                    f.close()
        for d in tmp:
            shutil.rmtree(d, ignore_errors=True)
    times = sorted(ready.values())
    ok = len(times) == k and all(t == t for t in times)
    return {"to_ready_s": [rnd(t) for t in times], "all_ready_s": rnd(max(times)) if ok else None, "ok": ok}


def run_raw(argv: list[str], timeout: float) -> dict:
    """Popen -> the ready line on stdout; then SIGKILL by PID. Times in seconds."""
    tmp: list[str] = []
    argv = materialize(argv, tmp)
    err = tempfile.TemporaryFile()  # a file, not a pipe: nobody reads stderr while QEMU runs
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    t_spawned = time.monotonic()
    OWN_PIDS.add(p.pid)
    buf, ready_t, cpu_at_ready = b"", None, None
    fd = p.stdout.fileno()
    try:
        while time.monotonic() - t0 < timeout:
            r, _, _ = select.select([fd], [], [], 0.5)
            if not r:
                if p.poll() is not None:
                    break
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            if READY_RE.search(buf):
                ready_t = time.monotonic() - t0
                cpu_at_ready = proc_cpu_s(p.pid)
                break
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = -signal.SIGKILL
        OWN_PIDS.discard(p.pid)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        for f in (p.stdin, p.stdout, err):
            with contextlib.suppress(OSError):
                f.close()
        for d in tmp:
            shutil.rmtree(d, ignore_errors=True)
    return {"to_ready_s": rnd(ready_t), "popen_s": rnd(t_spawned - t0, 4), "qemu_cpu_at_ready_s": rnd(cpu_at_ready, 2),
            "qemu_cpu_total_s": rnd(ru.ru_utime + ru.ru_stime, 2), "ok": ready_t is not None,
            "stderr_tail": stderr[-400:] if ready_t is None else "", "console_tail": "" if ready_t else buf[-400:].decode(errors="replace")}


# ---------------------------------------------------------------------------------------------
# caskit in this process, with timers around the harness's own methods


class Probe:
    """Wraps harness methods (in this process) so every call leaves (name, t0, t1) in a list."""

    def __init__(self):
        self.events: list[tuple[str, float, float]] = []
        self.qemu_pid: int | None = None
        self.qemu_cpu_at_ready: float | None = None
        self._undo: list = []
        self.missing: list[str] = []  # harness names this version does not have (the harness moves on)

    def wrap(self, owner, attr: str, name: str | None = None, after=None):
        orig = getattr(owner, attr, None)
        if orig is None:
            self.missing.append(f"{getattr(owner, '__name__', owner)}.{attr}")
            return
        label = name or attr
        ev = self.events

        def wrapper(*a, **kw):
            t0 = time.monotonic()
            try:
                return orig(*a, **kw)
            finally:
                ev.append((label(a, kw) if callable(label) else label, t0, time.monotonic()))
                if after:
                    after(a)

        setattr(owner, attr, wrapper)
        self._undo.append((owner, attr, orig))

    def wrap_cm(self, owner, attr: str, name: str):
        """A context-manager method: time from the call to entering the block."""
        orig = getattr(owner, attr, None)
        if orig is None:
            self.missing.append(f"{getattr(owner, '__name__', owner)}.{attr}")
            return
        ev = self.events

        @contextlib.contextmanager
        def wrapper(*a, **kw):
            t0 = time.monotonic()
            with orig(*a, **kw) as v:
                ev.append((name, t0, time.monotonic()))
                yield v

        setattr(owner, attr, wrapper)
        self._undo.append((owner, attr, orig))

    def install(self):
        import importlib

        from harness import cellrun, console, hosts, machine, qmp

        self.wrap(cellrun, "run_cell", "run_cell")
        self.wrap(cellrun, "execute", "execute")
        for mod in ("harness.cellrun", "harness.cell_machines"):  # wherever the argv is rendered from
            with contextlib.suppress(ImportError):
                m = importlib.import_module(mod)
                if hasattr(m, "qemu_argv"):
                    self.wrap(m, "qemu_argv", "argv_render")
        self.wrap_cm(hosts.LocalHost, "lease", "lease_wait")
        self.wrap(hosts.LocalHost, "spawn", "spawn")
        self.wrap(hosts.LocalHost, "connect_unix", "connect_unix")
        self.wrap(hosts.LocalHost, "remove_tree", "remove_tree")

        def note_pid(a):
            m = a[0]
            if m.proc is not None:
                self.qemu_pid = m.proc.pid

        self.wrap(machine.GuestMachine, "launch", "launch", after=note_pid)
        self.wrap(machine.GuestMachine, "shutdown", "shutdown")

        def cpu_at_ready(_a):
            if self.qemu_pid:
                self.qemu_cpu_at_ready = proc_cpu_s(self.qemu_pid)

        self.wrap(console.Console, "wait_ready", "wait_ready", after=cpu_at_ready)
        self.wrap(console.Console, "run", lambda a, kw: f"console_run:{a[1] if len(a) > 1 else kw.get('command')}")
        self.wrap(qmp.QmpClient, "__init__", "qmp_handshake")
        self.wrap(qmp.QmpClient, "execute", lambda a, kw: f"qmp:{a[1] if len(a) > 1 else kw.get('command')}"
                  + (f":{kw.get('command-line')}" if kw.get("command-line") else ""))
        self.wrap(hosts.LocalProcess, "wait", "proc_wait")

    def uninstall(self):
        for owner, attr, orig in reversed(self._undo):
            setattr(owner, attr, orig)
        self._undo.clear()

    def reset(self):
        self.events.clear()
        self.qemu_pid = self.qemu_cpu_at_ready = None

    def first(self, name):
        return next((e for e in self.events if e[0] == name), None)

    def all(self, name):
        return [e for e in self.events if e[0] == name]

    def phases(self) -> dict:
        """One cell's phases in seconds, from the recorded calls."""
        f = self.first
        rc, ex, launch, ready = f("run_cell"), f("execute"), f("launch"), f("wait_ready")
        if not (rc and ex and launch):
            return {}
        ph: dict[str, float | None] = {}
        lease = f("lease_wait")
        ph["pre_execute"] = ex[1] - rc[1]  # model.expect, cell dir
        ph["lease_wait"] = (lease[2] - lease[1]) if lease else None
        ph["argv_render"] = (f("argv_render")[2] - f("argv_render")[1]) if f("argv_render") else None
        ph["pre_launch"] = launch[1] - ex[1]  # lease + tempdir + argv + GuestMachine()
        spawn = f("spawn")
        conns = [e for e in self.events if e[0] == "connect_unix" and launch[1] <= e[1] <= launch[2]]
        hs = f("qmp_handshake")
        if spawn:
            ph["launch.spawn"] = spawn[2] - spawn[1]
            if conns:
                ph["launch.socket_wait"] = conns[0][1] - spawn[2]  # QEMU start until both sockets exist, + poll
        if hs:
            ph["launch.qmp_handshake"] = hs[2] - hs[1]
        ph["launch"] = launch[2] - launch[1]
        cont = next((e for e in self.events if e[0] == "qmp:cont"), None)
        if cont:
            ph["qom_get_and_cont"] = cont[2] - launch[2]
        if ready and cont:
            ph["boot_to_ready"] = ready[2] - cont[2]
        obs = next((e for e in self.events if e[0].startswith("console_run:")), None)
        if obs:
            ph["observe_command"] = obs[2] - obs[1]
        pic = next((e for e in self.events if e[0] == "qmp:human-monitor-command:info pic"), None)
        if pic:
            ph["info_pic"] = pic[2] - pic[1]
        sd = f("shutdown")
        if sd:
            ph["shutdown"] = sd[2] - sd[1]
            quit_ = next((e for e in self.events if e[0] == "qmp:quit"), None)
            if quit_:
                ph["shutdown.qmp_quit"] = quit_[2] - quit_[1]
            waits = [e for e in self.events if e[0] == "proc_wait" and e[1] >= sd[1] and e[2] <= sd[2]]
            if waits:
                ph["shutdown.wait_exit"] = sum(e[2] - e[1] for e in waits)
            rm = [e for e in self.events if e[0] == "remove_tree" and e[1] >= sd[1]]
            if rm:
                ph["remove_dirs"] = sum(e[2] - e[1] for e in rm)
        ph["post_execute"] = rc[2] - ex[2]  # verdict, result.json
        if ready:
            ph["to_ready_from_spawn"] = ready[2] - launch[1]
            ph["to_ready_from_cell_start"] = ready[2] - rc[1]
        ph["whole_cell"] = rc[2] - rc[1]
        return {k: rnd(v, 4) for k, v in ph.items()}


class InProc:
    """harness.cellrun.run_cell for one cell, as a `caskit run` worker would call it."""

    def __init__(self, matrix_file: Path, work: Path):
        from harness import kit, prepare as session
        from harness import probe
        from harness.config import load_hosts

        t0 = time.monotonic()
        self.plan = session.load_plan([str(matrix_file)], None)
        t1 = time.monotonic()
        self.cell = self.plan.cells[0]
        self.spec = load_hosts(None)[self.cell.host]
        self.facts = probe.probe(self.spec, work / "probe", log=lambda m: None)
        t2 = time.monotonic()
        self.kit = kit.build(log=lambda m: None)
        t3 = time.monotonic()
        self.timeouts = self.plan.matrices[0].timeouts
        self.work = work
        self.setup = {"plan_s": round(t1 - t0, 3), "probe_s": round(t2 - t1, 3), "kit_lookup_s": round(t3 - t2, 3)}
        self.probe = Probe()
        self.probe.install()

    def run(self, i: int) -> dict:
        from harness.cellrun import CellContext, run_cell
        from harness.connect import make_host
        from harness.results import RunStore

        run_id = f"bench-{os.getpid()}-{i}"
        OWN_TAGS.add(f"caskit:{run_id}:")
        store = RunStore(self.work / f"inproc-{i}")
        ctx = CellContext(self.cell, self.facts, make_host(self.spec), self.kit, store, run_id, self.timeouts, "bench")
        self.probe.reset()
        cpu_self0, cpu_ch0 = self_cpu_s(), children_cpu_s()
        rec = run_cell(ctx)
        ph = self.probe.phases()
        return {"verdict": rec["verdict"], "duration_s": rec["duration_s"], "phases": ph,
                "to_ready_s": ph.get("to_ready_from_spawn"), "to_ready_from_cell_start_s": ph.get("to_ready_from_cell_start"),
                "whole_cell_s": ph.get("whole_cell"), "qemu_cpu_at_ready_s": rnd(self.probe.qemu_cpu_at_ready, 2),
                "qemu_cpu_total_s": round(children_cpu_s() - cpu_ch0, 2),
                "harness_cpu_s": round(self_cpu_s() - cpu_self0, 3), "error": rec["observed"].get("error")}

    def close(self):
        self.probe.uninstall()


# ---------------------------------------------------------------------------------------------
# the benchmark


def one_cell_matrix(path: Path) -> dict:
    """A matrix file holding only the first cell of the quick matrix."""
    import yaml

    from harness import prepare as session

    c = session.load_plan(["quick"], None).cells[0]
    axes = {k: [v] for k, v in c.axes_dict.items()}
    path.write_text(yaml.safe_dump({"name": "bench-one", "hosts": [c.host], "axes": axes, "workloads": list(c.workloads),
                                    "migration": [c.migration]}, sort_keys=False))
    return {"id": c.id, "axes": c.axes_dict}


def part_single(work: Path, repeat: int, log, smoke: bool = False) -> dict:
    """Part 1. `smoke`: the cli sample is the warm-up run itself (the same command), not a
    second run."""
    mfile = work / "one.yaml"
    cell = one_cell_matrix(mfile)
    log(f"single cell {cell['id']}: warm-up `caskit run` (gives the argv)")
    before = load_snapshot()
    warm = run_caskit([str(mfile)], work / "cli-warmup", timeout=240)
    WARMUP.update({"1": (work / "cli-warmup", warm, None, before)})
    if not warm["results"] or not warm["results"]["cells"]:
        raise SystemExit(f"bench: the warm-up caskit run gave no results:\n{warm['output_tail']}")
    wrec = warm["results"]["cells"][0]
    argv_file = work / "cli-warmup" / "cells" / wrec["id"] / "qemu-argv.txt"
    caskit_argv = [l for l in argv_file.read_text().splitlines() if l]
    rargv, changes = raw_argv(caskit_argv)
    log("raw argv changes: " + "; ".join(changes))

    inproc = InProc(mfile, work)
    samples = {"raw": [], "inproc": [], "cli": [], "raw_pair": []}
    kinds = ["raw", "inproc", "cli", "raw_pair"]
    try:
        for i in range(repeat):
            order = kinds[i % len(kinds):] + kinds[:i % len(kinds)]  # rotate: each kind runs first, second... alike
            for k in order:
                before = load_snapshot()
                if k == "raw":
                    s = run_raw(rargv, timeout=180)
                elif k == "raw_pair":
                    s = run_raw_pair(rargv, timeout=240)
                elif k == "inproc":
                    s = inproc.run(i)
                else:
                    if smoke:
                        out, key, r = work / "cli-warmup", None, warm
                    else:
                        out = work / f"cli-{i}"
                        key = kit_key()  # a kit changed under us is built here, not in the timed run
                        r = run_caskit([str(mfile)], out, timeout=240)
                    rec = r["results"]["cells"][0] if r["results"] and r["results"]["cells"] else None
                    tl = cell_timeline(out, rec) if rec else {}
                    prep = run_prepare_times(out, r)
                    s = {"wall_s": r["wall_s"], "exit": r["exit"], "cpu_s": r["cpu_s"], "kit": prep.get("kit"),
                         "kit_rebuilt_during_run": bool(key and prep.get("kit") != key),
                         "verdict": rec["verdict"] if rec else None, "duration_s": rec["duration_s"] if rec else None,
                         "phases": tl.get("phases", {})}
                    if tl.get("t"):
                        s["phases"]["cli_startup_to_cell_start"] = round(tl["t"]["start"] - r["t_start"], 3)
                        s["phases"]["cell_end_to_cli_exit"] = round(r["t_end"] - tl["t"]["end"], 3)
                s["iter"], s["load_before"], s["load_after"] = i, before, load_snapshot()
                samples[k].append(s)
                log(f"  [{i + 1}/{repeat}] {k:6} " + ", ".join(
                    f"{x}={s[x]}" for x in ("to_ready_s", "all_ready_s", "whole_cell_s", "wall_s", "duration_s", "verdict") if s.get(x) is not None)
                    + f"  (load {s['load_before']['loadavg_1m']}, other QEMUs {s['load_before']['foreign_qemu']})")
    finally:
        inproc.close()
    return {"cell": cell, "matrix_file": str(mfile), "caskit_argv": caskit_argv, "raw_argv": rargv,
            "raw_argv_changes": changes, "inproc_setup_s": inproc.setup, "inproc_probes_missing": inproc.probe.missing,
            "warmup_cli": {"wall_s": warm["wall_s"], "cell_duration_s": wrec["duration_s"], "verdict": wrec["verdict"]},
            "samples": samples, "summary": single_summary(samples)}


def single_summary(samples: dict) -> dict:
    """Medians and ratios of part 1 from its samples (also usable on a saved latest.json)."""
    raw_ready = med(s["to_ready_s"] for s in samples["raw"])
    ip_ready = med(s["to_ready_s"] for s in samples["inproc"])
    ip_ready_cs = med(s["to_ready_from_cell_start_s"] for s in samples["inproc"])
    phase_names = list(dict.fromkeys(k for s in samples["inproc"] for k in s["phases"]))
    cli_phase_names = list(dict.fromkeys(k for s in samples["cli"] for k in s["phases"]))
    summary = {
        "raw_to_ready_s": raw_ready,
        "raw_to_ready_min_s": min((s["to_ready_s"] for s in samples["raw"] if s["to_ready_s"]), default=None),
        "caskit_to_ready_s": ip_ready,
        "caskit_to_ready_min_s": min((s["to_ready_s"] for s in samples["inproc"] if s["to_ready_s"]), default=None),
        "caskit_to_ready_from_cell_start_s": ip_ready_cs,
        "ratio_to_ready": rnd(ip_ready / raw_ready) if ip_ready and raw_ready else None,
        "ratio_to_ready_from_cell_start": rnd(ip_ready_cs / raw_ready) if ip_ready_cs and raw_ready else None,
        "ratio_target": TARGET_RATIO,
        "raw_qemu_cpu_at_ready_s": med(s["qemu_cpu_at_ready_s"] for s in samples["raw"]),
        "caskit_qemu_cpu_at_ready_s": med(s["qemu_cpu_at_ready_s"] for s in samples["inproc"]),
        "caskit_whole_cell_s": med(s["whole_cell_s"] for s in samples["inproc"]),
        "caskit_harness_cpu_per_cell_s": med(s["harness_cpu_s"] for s in samples["inproc"]),
        "caskit_phases_median_s": {k: med(s["phases"].get(k) for s in samples["inproc"]) for k in phase_names},
        "cli_wall_s": med(s["wall_s"] for s in samples["cli"]),
        "cli_cell_duration_s": med(s["duration_s"] for s in samples["cli"]),
        "cli_cpu_s": med(s["cpu_s"] for s in samples["cli"]),
        "cli_phases_median_s": {k: med(s["phases"].get(k) for s in samples["cli"]) for k in cli_phase_names},
        "cli_runs_with_kit_rebuild": sum(1 for s in samples["cli"] if s.get("kit_rebuilt_during_run")),
    }
    cpu_r, cpu_c = summary["raw_qemu_cpu_at_ready_s"], summary["caskit_qemu_cpu_at_ready_s"]
    summary["raw_qemu_cores_busy_to_ready"] = rnd(cpu_r / raw_ready, 2) if cpu_r and raw_ready else None
    pair = med(s["all_ready_s"] for s in samples["raw_pair"])
    summary["raw_pair_all_ready_s"] = pair
    # Two boots one after the other take 2 x raw; side by side they take `pair`: the best -n 2 can do.
    summary["raw_parallel_speedup_ceiling"] = rnd(2 * raw_ready / pair) if pair and raw_ready else None
    pair_min = min((s["all_ready_s"] for s in samples["raw_pair"] if s["all_ready_s"]), default=None)
    summary["raw_pair_all_ready_min_s"] = pair_min
    summary["raw_parallel_speedup_ceiling_from_mins"] = (rnd(2 * summary["raw_to_ready_min_s"] / pair_min)
                                                         if pair_min and summary["raw_to_ready_min_s"] else None)
    summary["ratio_qemu_cpu_at_ready"] = rnd(cpu_c / cpu_r) if cpu_r and cpu_c else None
    # Each caskit sample against the raw sample of the same iteration (run next to it): drift in the
    # machine's load cancels out better than in the ratio of the medians.
    raw_by_iter = {s["iter"]: s["to_ready_s"] for s in samples["raw"] if s["to_ready_s"]}
    paired = [s["to_ready_s"] / raw_by_iter[s["iter"]] for s in samples["inproc"] if s["to_ready_s"] and s["iter"] in raw_by_iter]
    summary["ratio_to_ready_paired_median"] = med(paired)
    # What the harness puts between QEMU's start and the guest's first instruction (spawn, socket wait,
    # console and QMP attach, qom-get, cont): an upper bound of its overhead, since the socket wait
    # and the QMP greeting also hold QEMU's own start-up, which the raw run pays too. Unlike the
    # wall-clock medians, this does not move with the machine's load by more than some milliseconds.
    ph = summary["caskit_phases_median_s"]
    if raw_ready and ph.get("launch") is not None and ph.get("qom_get_and_cont") is not None:
        added = ph["launch"] + ph["qom_get_and_cont"]
        summary["harness_added_before_guest_runs_s"] = rnd(added)
        summary["ratio_upper_bound_from_phases"] = rnd(1 + added / raw_ready)
    return summary


def kit_key() -> str | None:
    """Build (or find cached) the kit now, so that no timed run pays for a build."""
    kb = subprocess.run(caskit_cmd() + ["kit", "build"], cwd=ROOT, capture_output=True, text=True)
    with contextlib.suppress(ValueError):
        return json.loads(kb.stdout)["key"]
    return None


def run_prepare_times(out: Path, r: dict) -> dict:
    """When the run's controller had written run.json (probe, kit, plan done), and which kit."""
    try:
        rj = out / "run.json"
        return {"run_json_written": rj.stat().st_mtime, "kit": json.loads(rj.read_text())["kit"]["key"]}
    except (OSError, ValueError, KeyError):
        return {}


def part_matrix(work: Path, log, order=("1", "2"), done: dict | None = None) -> dict:
    """The quick matrix with `caskit run -n N` for each N in `order`; `done` (N -> (out, run,
    kit key, load before)) gives runs already made instead (--smoke: part 1's warm-up)."""
    runs = {}
    for n in order:
        if done and n in done:
            out, r, key, before = done[n]
            log(f"-n {n}: the figures of {out.name}")
        else:
            out = work / f"matrix-n{n}"
            key = kit_key()
            log(f"quick matrix, -n {n} ...")
            before = load_snapshot()
            r = run_caskit(["-n", n], out, timeout=900)
        prep = run_prepare_times(out, r)
        cells = r["results"]["cells"] if r["results"] else []
        tls = {c["id"]: cell_timeline(out, c) for c in cells}
        starts = [t["t"]["start"] for t in tls.values() if t.get("t")]
        ends = [t["t"]["end"] for t in tls.values() if t.get("t")]
        workers = {}
        for c in cells:
            workers.setdefault(c.get("worker", "?"), []).append(c["duration_s"])
        runs[n] = {
            "wall_s": r["wall_s"], "exit": r["exit"], "cpu_s": r["cpu_s"], "timed_out": r["timed_out"],
            "avg_cores_busy": round(r["cpu_s"] / r["wall_s"], 2) if r["wall_s"] else None,
            "summary": r["results"]["summary"] if r["results"] else None,
            "cells": {c["id"]: {"verdict": c["verdict"], "duration_s": c["duration_s"], "worker": c.get("worker"),
                                "phases": tls[c["id"]].get("phases", {})} for c in cells},
            "cell_duration_median_s": med(c["duration_s"] for c in cells),
            "cell_duration_sum_s": round(sum(c["duration_s"] for c in cells), 2),
            "booting_cell_duration_median_s": med(c["duration_s"] for c in cells if c["verdict"] == "PASS"),
            "boot_and_observe_median_s": med(t.get("phases", {}).get("boot_and_observe") for t in tls.values()),
            "startup_to_first_cell_s": rnd(min(starts) - r["t_start"]) if starts else None,
            # process start -> run.json (imports, plan, host probe, kit lookup) and run.json -> first cell
            # (pytest-xdist starting its workers, their collection, the first fixture)
            "startup_prepare_s": rnd(prep["run_json_written"] - r["t_start"]) if prep else None,
            "startup_workers_s": rnd(min(starts) - prep["run_json_written"]) if prep and starts else None,
            "kit": prep.get("kit"), "kit_rebuilt_during_run": bool(prep and key and prep.get("kit") != key),
            "last_cell_to_exit_s": rnd(r["t_end"] - max(ends)) if ends else None,
            "cells_span_s": rnd(max(ends) - min(starts)) if starts else None,
            "per_worker_busy_s": {w: round(sum(d), 2) for w, d in sorted(workers.items())},
            # lease wait + argv + spawn + attach: seconds above ~0.5 are a slot lease held by someone else
            "prelaunch_sum_s": round(sum(t.get("phases", {}).get("start_to_qmp_greeting", 0) for t in tls.values()), 2),
            "prelaunch_max_s": max((t.get("phases", {}).get("start_to_qmp_greeting", 0) for t in tls.values()), default=None),
            "load_before": before, "load_after": load_snapshot(), "output_tail": r["output_tail"][-600:],
        }
        log(f"  -n {n}: wall {r['wall_s']:.1f}s, exit {r['exit']}, {runs[n]['summary']}, "
            f"cell median {runs[n]['cell_duration_median_s']}s (load {before['loadavg_1m']}, other QEMUs {before['foreign_qemu']})")
    t1, t2 = runs.get("1", {}).get("wall_s"), runs.get("2", {}).get("wall_s")
    ids = list(runs.get("1", runs.get("2", {})).get("cells", {}))
    return {"runs": runs, "speedup": rnd(t1 / t2) if t1 and t2 else None, "speedup_target": TARGET_SPEEDUP,
            "worker_startup_extra_s": rnd(runs["2"]["startup_workers_s"] - runs["1"]["startup_workers_s"])
            if "1" in runs and "2" in runs and runs["1"]["startup_workers_s"] and runs["2"]["startup_workers_s"] else None,
            "cells_span_speedup": rnd(runs["1"]["cells_span_s"] / runs["2"]["cells_span_s"])
            if t1 and t2 and runs["1"]["cells_span_s"] and runs["2"]["cells_span_s"] else None,
            "per_cell": {i: {n: runs[n]["cells"].get(i, {}).get("duration_s") for n in runs} for i in ids}}


def cli_fixed_costs(mfile: Path, n: int = 3) -> dict:
    """What every `caskit run` pays before its first cell, boots aside: interpreter and imports,
    then `caskit matrix` (imports, plan, host probe: one paused QEMU), median of n."""
    imp, mat = [], []
    for _ in range(n):
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", "import harness.cli, harness.pytest_plugin, harness.cellrun, pytest, xdist"],
                       cwd=ROOT, capture_output=True)
        imp.append(time.monotonic() - t)
        t = time.monotonic()
        subprocess.run(caskit_cmd() + ["matrix", str(mfile)], cwd=ROOT, capture_output=True)
        mat.append(time.monotonic() - t)
    t = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], capture_output=True)
    bare = time.monotonic() - t
    return {"python_bare_s": rnd(bare), "python_imports_s": med(imp), "caskit_matrix_probe_s": med(mat)}


def verify_no_qemu(log) -> dict:
    """pgrep for every QEMU this script started (by PID or run tag); kill any by PID."""
    left = [(p, c) for p, c in qemu_processes() if is_own(p, c)]
    killed = []
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    time.sleep(0.2 if killed else 0)
    still = [p for p, c in qemu_processes() if is_own(p, c)]
    if left:
        log(f"WARNING: {len(left)} of our QEMU processes were still running; killed {killed}")
    return {"own_qemu_left": [p for p, _ in left], "killed": killed, "still_running": still,
            "tags_checked": sorted(OWN_TAGS), "foreign_qemu_now": load_snapshot()["foreign_qemu"]}


def cleanup_all():
    for pid in list(OWN_PIDS):
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    for pg in list(OWN_GROUPS):
        stop_caskit_run(pg, Path("/nonexistent"))
    with contextlib.suppress(Exception):
        from harness.hosts import kill_tagged
        for t in OWN_TAGS:
            kill_tagged(t)


# ---------------------------------------------------------------------------------------------
# report


def fmt(x, unit="s"):
    return "-" if x is None else f"{x:.2f}{unit}" if isinstance(x, float) else str(x)


def print_table(res: dict) -> None:
    m = res["machine"]
    print()
    print(f"machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['qemu_version']}"
          + ("   (private slot-lock dir)" if res["args"].get("private_locks") else ""))
    s = res.get("single")
    if s:
        su = s["summary"]
        n = len(s["samples"]["raw"])
        print(f"\n== 1. one cell ({s['cell']['id']}), median of {n} ==")
        print(f"{'':44}{'raw qemu':>12}{'caskit':>12}{'ratio':>8}")
        print(f"{'launch -> CASKIT-READY (wall)':44}{fmt(su['raw_to_ready_s']):>12}{fmt(su['caskit_to_ready_s']):>12}"
              f"{fmt(su['ratio_to_ready'], ''):>8}   target <= {TARGET_RATIO}"
              f" {'MET' if su['ratio_to_ready'] and su['ratio_to_ready'] <= TARGET_RATIO else 'MISSED'}")
        print(f"{'  min of the repeats':44}{fmt(su['raw_to_ready_min_s']):>12}{fmt(su['caskit_to_ready_min_s']):>12}")
        print(f"{'  median of per-iteration ratios (paired)':44}{'':>24}{fmt(su.get('ratio_to_ready_paired_median'), ''):>8}")
        print(f"{'  harness time before the guest runs':44}{'':>12}{fmt(su.get('harness_added_before_guest_runs_s')):>12}"
              f"{fmt(su.get('ratio_upper_bound_from_phases'), ''):>8}   (upper bound of the ratio, from the phases)")
        print(f"{'cell start -> CASKIT-READY (incl. lease)':44}{'':>12}{fmt(su['caskit_to_ready_from_cell_start_s']):>12}"
              f"{fmt(su['ratio_to_ready_from_cell_start'], ''):>8}")
        print(f"{'QEMU CPU time at CASKIT-READY':44}{fmt(su['raw_qemu_cpu_at_ready_s']):>12}"
              f"{fmt(su['caskit_qemu_cpu_at_ready_s']):>12}{fmt(su['ratio_qemu_cpu_at_ready'], ''):>8}")
        print(f"{'QEMU cores busy, launch -> ready':44}{fmt(su['raw_qemu_cores_busy_to_ready'], ''):>12}")
        print(f"{'2 raw QEMUs side by side, both ready':44}{fmt(su['raw_pair_all_ready_s']):>12}"
              f"{'':>12}  -> -n 2 ceiling 2*raw/pair = {fmt(su['raw_parallel_speedup_ceiling'], '')}"
              f" (from the minima: {fmt(su['raw_parallel_speedup_ceiling_from_mins'], '')})")
        print(f"{'whole cell, in process (run_cell)':44}{'':>12}{fmt(su['caskit_whole_cell_s']):>12}")
        print(f"{'whole `caskit run` of a 1-cell matrix (wall)':44}{'':>12}{fmt(su['cli_wall_s']):>12}")
        print(f"{'  its cell duration_s':44}{'':>12}{fmt(su['cli_cell_duration_s']):>12}")
        print(f"{'harness CPU per cell (controller python)':44}{'':>12}{fmt(su['caskit_harness_cpu_per_cell_s']):>12}")
        print("\n  caskit cell phases, in process (median s):")
        for k, v in su["caskit_phases_median_s"].items():
            print(f"    {k:36}{fmt(v):>10}")
        print("  `caskit run` phases, from qmp.jsonl stamps (median s):")
        for k, v in su["cli_phases_median_s"].items():
            print(f"    {k:36}{fmt(v):>10}")
    mx = res.get("matrix")
    if mx:
        r1, r2 = mx["runs"].get("1", {}), mx["runs"].get("2", {})
        print("\n== 2. quick matrix ==" if not res["args"].get("smoke") else
              "\n== 2. (--smoke: part 1's warm-up run, -n 1, one cell) ==")
        print(f"{'':36}{'-n 1':>10}{'-n 2':>10}")
        for label, key in (("wall time", "wall_s"), ("cell duration median", "cell_duration_median_s"),
                           ("booting (PASS) cell median", "booting_cell_duration_median_s"),
                           ("  of which cont -> info pic, median", "boot_and_observe_median_s"),
                           ("sum of cell durations", "cell_duration_sum_s"), ("startup -> first cell", "startup_to_first_cell_s"),
                           ("  of which prepare (probe, kit)", "startup_prepare_s"),
                           ("  of which workers + collection", "startup_workers_s"),
                           ("last cell -> exit", "last_cell_to_exit_s"), ("cell start -> QEMU up, max", "prelaunch_max_s"),
                           ("cell start -> QEMU up, sum", "prelaunch_sum_s"), ("CPU time (all processes)", "cpu_s"),
                           ("avg cores busy", "avg_cores_busy")):
            print(f"{label:36}{fmt(r1.get(key), '' if key == 'avg_cores_busy' else 's'):>10}"
                  f"{fmt(r2.get(key), '' if key == 'avg_cores_busy' else 's'):>10}")
        print(f"{'verdicts':36}{str(r1.get('summary', {}) and {k: v for k, v in r1['summary'].items() if v}):>10}")
        for n, r in mx["runs"].items():
            if r.get("kit_rebuilt_during_run"):
                print(f"NOTE: the -n {n} run rebuilt the guest kit (guest_tests/ changed under it): its start-up "
                      "includes a kit build")
        if max(r.get("prelaunch_max_s") or 0 for r in mx["runs"].values()) > 2:
            print("NOTE: some cells waited > 2s between their start and QEMU's QMP greeting: a host slot lease "
                  "held by another caskit run on this host (see --private-locks)")
        sp = mx["speedup"]
        ceil = (res.get("single") or {}).get("summary", {}).get("raw_parallel_speedup_ceiling")
        print(f"speedup t1/t2 = {fmt(sp, '')}   target >= {TARGET_SPEEDUP} {'MET' if sp and sp >= TARGET_SPEEDUP else 'MISSED'}"
              f"   (raw QEMU ceiling on this machine: {fmt(ceil, '')}; span of the cells alone: "
              f"{fmt(mx.get('cells_span_speedup'), '')}; xdist worker start-up: +{fmt(mx.get('worker_startup_extra_s'))})")
        print("  per cell duration_s:            -n 1     -n 2")
        for cid, d in mx["per_cell"].items():
            print(f"    {cid[:60]:60}{fmt(d.get('1')):>8}{fmt(d.get('2')):>8}")
    if res.get("cli_fixed_costs"):
        print(f"\nCLI fixed costs (median s): {res['cli_fixed_costs']}")
    v = res["verify"]
    print(f"\nQEMU left running by this benchmark: {len(v['still_running'])} (pgrep); other QEMUs on the machine now: "
          f"{v['foreign_qemu_now']}")
    if res["load"]["max_foreign_qemu"]:
        print(f"NOTE: other QEMU processes (up to {res['load']['max_foreign_qemu']}) ran during the benchmark; "
              f"load average up to {res['load']['max_loadavg']}. The figures are contaminated by that load.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="repeats of the single-cell comparison (default 5)")
    ap.add_argument("--skip-matrix", action="store_true", help="skip the quick matrix -n 1 / -n 2 part")
    ap.add_argument("--skip-single", action="store_true", help="skip the single-cell part")
    ap.add_argument("--matrix-order", default="1,2", help="order of the matrix runs (default 1,2)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="first wait up to S seconds for other QEMU processes to finish")
    ap.add_argument("--private-locks", action="store_true",
                    help="give our runs their own slot-lock directory (CASKIT_LOCK_DIR), so that other caskit "
                         "users of this host cannot hold our cells in the slot lease (the CPUs stay shared)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (run outputs)")
    ap.add_argument("--json", default=None, help="where to write the figures (default bench/results/latest.json; "
                                                  "with --smoke a new temporary file)")
    ap.add_argument("--smoke", action="store_true",
                    help="the smallest real run: one sample of each kind, the fixed costs once, part 2 from the "
                         "warm-up run of the one-cell matrix; exit 1 unless every sample was taken")
    a = ap.parse_args(argv)
    if a.smoke:
        a.repeat, a.matrix_order, a.skip_single, a.skip_matrix = 1, "1", False, False
    json_out = _smoke.json_path(a.json, a.smoke, "latest")

    def log(msg):
        print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)

    T0 = time.monotonic()
    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="caskit-bench-"))
    res: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_info(),
                 "git": git_sha(), "args": vars(a), "work_dir": str(work)}
    loads = []
    if a.private_locks:
        os.environ["CASKIT_LOCK_DIR"] = str(work / "locks")  # read by harness.hosts.lock_dir(), here and in our CLIs
    try:
        if a.wait_quiet:
            w = wait_quiet(a.wait_quiet)
            log(f"waited {w:.0f}s for other QEMUs; now {load_snapshot()}")
        loads.append(load_snapshot())
        t = time.monotonic()
        kb = subprocess.run(caskit_cmd() + ["kit", "build"], cwd=ROOT, capture_output=True, text=True)
        if kb.returncode:
            raise SystemExit(f"bench: caskit kit build failed:\n{kb.stderr[-2000:]}")
        res["kit"] = {**json.loads(kb.stdout), "build_or_lookup_s": round(time.monotonic() - t, 2)}
        log(f"kit {res['kit']['key']} ({res['kit']['build_or_lookup_s']}s)")
        if not a.skip_single:
            res["single"] = part_single(work, a.repeat, log, smoke=a.smoke)
            res["cli_fixed_costs"] = cli_fixed_costs(Path(res["single"]["matrix_file"]), n=1 if a.smoke else 3)
            log(f"CLI fixed costs: {res['cli_fixed_costs']}")
        loads.append(load_snapshot())
        if not a.skip_matrix:
            res["matrix"] = part_matrix(work, log, tuple(x.strip() for x in a.matrix_order.split(",")),
                                        WARMUP if a.smoke else None)
        loads.append(load_snapshot())
    except KeyboardInterrupt:
        log("interrupted; stopping everything started here")
        res["interrupted"] = True
    finally:
        cleanup_all()
        res["verify"] = verify_no_qemu(log)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    samples = [s[k] for part in ("raw", "inproc", "cli", "raw_pair") for s in res.get("single", {}).get("samples", {}).get(part, [])
               for k in ("load_before", "load_after")]
    for r in res.get("matrix", {}).get("runs", {}).values():
        samples += [r["load_before"], r["load_after"]]
    samples += loads
    res["load"] = {"max_foreign_qemu": max((x["foreign_qemu"] for x in samples), default=0),
                   "max_loadavg": max((x["loadavg_1m"] for x in samples), default=0)}
    res["total_s"] = round(time.monotonic() - T0, 1)
    res["smoke"] = a.smoke
    res["problems"] = problems = smoke_problems(res) if a.smoke else []
    out = json_out
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(res, indent=2, default=str) + "\n"
    out.write_text(text)
    if out.name == "latest.json" and out.parent.resolve() == _smoke.RESULTS.resolve():
        (out.parent / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(text)
    print_table(res)
    print(f"\nfigures: {out}   total {res['total_s']}s" + (f"   work dir kept: {work}" if a.keep else ""))
    if res["verify"]["still_running"] or res.get("interrupted"):
        return 1
    return _smoke.status(problems, a.smoke)


def smoke_problems(res: dict) -> list[str]:
    """Why the measurement was not taken, if it was not: a sample missing or failed."""
    problems = []
    if res["verify"]["own_qemu_left"]:
        problems.append(f"QEMU of this benchmark left running (killed): {res['verify']['own_qemu_left']}")
    single = res.get("single")
    if not single:
        problems.append("part 1 (one cell) gave nothing")
    else:
        for kind, samples in single["samples"].items():
            if not samples:
                problems.append(f"part 1: no {kind} sample")
            for s in samples:
                if kind in ("raw", "raw_pair") and not s.get("ok"):
                    problems.append(f"part 1: {kind} QEMU never ready: {s}")
                if kind in ("inproc", "cli") and s.get("verdict") != "PASS":
                    problems.append(f"part 1: {kind} cell {s.get('verdict')}: {s.get('error') or s.get('exit')}")
        for k in ("raw_to_ready_s", "caskit_to_ready_s", "ratio_to_ready", "cli_wall_s", "raw_pair_all_ready_s"):
            if not single["summary"].get(k):
                problems.append(f"part 1: no {k}")
    matrix = res.get("matrix")
    runs = (matrix or {}).get("runs", {})
    if not runs:
        problems.append("part 2 (the matrix) gave nothing")
    for n, r in runs.items():
        if r["exit"] != 0 or not r["cells"] or any(c["verdict"] != "PASS" for c in r["cells"].values()):
            problems.append(f"part 2, -n {n}: exit {r['exit']}, cells {r['cells']}: {r['output_tail'][-400:]}")
        if not r.get("wall_s") or not r.get("cell_duration_median_s"):
            problems.append(f"part 2, -n {n}: no wall time or cell duration")
    return problems


if __name__ == "__main__":
    sys.exit(main())
