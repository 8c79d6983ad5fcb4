"""reproduce.sh for every cell: the cell's exact QEMU command lines, made to run standalone.

What upstream accepts as a reproducer is a script that needs nothing of ours: QEMU, bash and
coreutils on any host, the guest kit's kernel and initramfs named by SHA-256. So each recorded
argv (qemu-argv.txt, one argument per line) is rewritten where it names something of the run:

- the console socket becomes QEMU's stdio (fed from a FIFO the script writes, logged to a file),
  other serial sockets (the heartbeat console) become files;
- the QMP socket becomes a pair of FIFOs (`-chardev pipe`), spoken to with `printf` and `read`:
  no socat, no qmp-shell, no socket to drive by hand;
- the kernel and initramfs become "${KERNEL}"/"${INITRD}", found by hash in a directory the user
  names; a workload disk becomes a file in the script's work directory;
- the QEMU binary and its firmware directory (-L) become variables defaulting to what ran.

The script then replays what caskit did (the guest commands sent before the first hop, and each
hop's QMP commands), prints the mode the guest negotiated or QEMU's refusal, and exits 0 when the
outcome caskit recorded happened again. Pure except `write_for`/`write_from_run`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from . import guestlog
from .records import known_issues_of
from .qemu_exit import signal_name
from .specs import matrix_settings
from .templating import env

SCRIPT = "reproduce.sh"
DISK_MIB = 64  # harness/workloads/devices.py DISK_MIB: the size caskit made the disk
# Workloads whose steps include QMP commands (device_add, system_reset) besides guest commands.
QMP_DRIVEN = {"device-hotplug", "reboot"}
# The QMP commands a replay sends again, in their place among the guest commands: the ones that
# change the machine. Reads (query-*, qom-get, qom-list, info ...) are the script's own business.
QMP_REPLAYED = {"device_add", "device_del", "netdev_add", "netdev_del", "qom-set", "system_reset", "set_link"}
MARK = "\x00"  # placeholders in rewritten argv: NUL never occurs in a real argument


def var(name: str) -> str:
    """A placeholder for a shell variable inside a rewritten argument."""
    return f"{MARK}{name}{MARK}"


def shell_word(word: str) -> str:
    """One argument as a bash word: literal parts single-quoted, placeholders as "${VAR}"."""
    parts = word.split(MARK)
    out = []
    for i, p in enumerate(parts):
        if i % 2:
            out.append(f'"${{{p}}}"')
        elif p:
            out.append(shlex.quote(p))
    return "".join(out) or "''"


def shell_words(words: list[str]) -> list[str]:
    return [shell_word(w) for w in words]


def _options(value: str) -> tuple[str, dict[str, str], list[str]]:
    """A QEMU option value "kind,k=v,..." as (kind, {k: v}, keys in order)."""
    head, *rest = value.split(",")
    kv = dict(p.split("=", 1) if "=" in p else (p, "") for p in rest)
    return head, kv, [p.split("=", 1)[0] for p in rest]


@dataclass(frozen=True)
class Rewritten:
    words: list[str]  # with placeholders
    disks: list[str]  # file names the script must create in $WORK
    serial_files: list[str]  # files the other serial consoles write to, under $WORK/<machine>/


def standalone_argv(argv: list[str], machine: str, *, qemu_var: str = "QEMU", data_var: str = "QEMU_DATA",
                    name: str = "") -> Rewritten:
    """The recorded argv of `machine` with every socket, kit path and binary made the script's."""
    if not argv:
        raise ValueError("an empty argv")
    d = f"{var('WORK')}/{machine}"
    # The first -serial is the guest's console (hvc0); any other (the heartbeat's hvc1) only writes.
    serials = [a.removeprefix("chardev:") for p, a in zip(argv, argv[1:]) if p == "-serial"]
    console = serials[0] if serials else None
    words: list[str] = [var(qemu_var)]
    disks: list[str] = []
    files: list[str] = []
    i = 1
    while i < len(argv):
        opt = argv[i]
        val = argv[i + 1] if i + 1 < len(argv) else None
        if opt == "-L" and val is not None:
            words += ["-L", var(data_var)]
        elif opt == "-name" and val is not None:
            words += ["-name", f"caskit-reproduce:{name or machine}:{machine}"]
        elif opt == "-kernel" and val is not None:
            words += ["-kernel", var("KERNEL")]
        elif opt == "-initrd" and val is not None:
            words += ["-initrd", var("INITRD")]
        elif opt == "-qmp" and val is not None:
            # QMP on two FIFOs, <dir>/qmp.in and <dir>/qmp.out, which QEMU opens read-write.
            words += ["-chardev", f"pipe,id=ckqmp,path={d}/qmp", "-mon", "chardev=ckqmp,mode=control"]
        elif opt == "-chardev" and val is not None and val.startswith("socket,"):
            _, kv, _ = _options(val)
            cid = kv.get("id", "")
            if cid == console:
                words += ["-chardev", f"stdio,id={cid},signal=off"]
            else:
                fname = "heartbeat.log" if cid == "hb0" else f"serial-{cid}.log"
                files.append(fname)
                words += ["-chardev", f"file,id={cid},path={d}/{fname}"]
        elif opt == "-drive" and val is not None and val.startswith("file="):
            _, kv, keys = _options("drive," + val)
            base = Path(kv["file"]).name
            disks.append(base)
            words += ["-drive", ",".join([f"file={var('WORK')}/{base}"]
                                         + [f"{k}={kv[k]}" if kv[k] != "" else k for k in keys if k != "file"])]
        elif val is not None and opt in OPTIONS_WITH_VALUE:
            words += [opt, val]
        else:
            words.append(opt)
            i += 1
            continue
        i += 2
    return Rewritten(words, disks, files)


# Options of the recorded argv that take a value (so the value is never read as an option).
OPTIONS_WITH_VALUE = {"-machine", "-M", "-accel", "-cpu", "-smp", "-m", "-display", "-serial", "-append",
                      "-netdev", "-device", "-incoming", "-global", "-object", "-chardev", "-mon", "-drive",
                      "-name", "-L", "-bios", "-boot", "-nic", "-vga", "-rtc", "-icount"}


# -- what happened, in the words the script prints and compares --------------------------------

def recorded_outcome(record: dict) -> str:
    """The cell's signature as the script can see it again: its first boot ("mode xive",
    "refused", "hang", "crashed SIGABRT", "exited 134" or "other"), then the kinds of finding in
    the guest kernel's log ("; kernel oops,soft-lockup"). A FAIL on an Oops is not reproduced by
    a healthy boot that negotiates the same mode."""
    o = record.get("observed") or {}
    guest = (o.get("guest") or {}).get("mode")
    code = o.get("exit_code")
    if o.get("mode") or guest:
        first = f"mode {o.get('mode') or guest}"
    elif o.get("error_kind") == "QemuRefused" or (code == 1 and o.get("stage") in ("qemu-start", "cas")):
        first = "refused"
    elif o.get("error_kind") == "GuestHang" or "the guest hung" in (o.get("error") or ""):
        first = "hang"
    elif o.get("error_kind") == "QemuCrashed" and isinstance(code, int) and code != 0:
        # As bash's `wait` reports it: a death by signal N is status 128 + N.
        first = (f"crashed {signal_name(-code)}" if code < 0 else
                 f"crashed {signal_name(code - 128)}" if code > 128 else f"exited {code}")
    else:
        first = "other"
    kinds = sorted({f.get("kind") for f in o.get("kernel_findings") or () if f.get("kind")})
    return first + (f"; kernel {','.join(kinds)}" if kinds else "")


def unchecked(record: dict) -> list[str]:
    """What of a failed cell's failure the script cannot judge by itself (a workload's verdict
    reads its output the way only caskit does): with any of it, the script never says REPRODUCED."""
    if record.get("verdict") not in ("FAIL", "ERROR", "FLAKY"):
        return []
    return [f"workload {w.get('name')}: {w.get('symptom') or _one_line(w.get('reason'))[:120]}"
            for w in record.get("workloads") or () if w.get("verdict") in ("FAIL", "ERROR")]


def kernel_patterns() -> list[tuple[str, str, str]]:
    """(kind, PCRE, PCRE of every earlier kind) for grep -P: the guest log's findings as
    guestlog.findings names them (the first pattern that matches a line names it)."""
    out, earlier = [], []
    for kind, rx in guestlog.FINDINGS:
        pat = ("(?i)" if rx.flags & re.I else "") + rx.pattern
        out.append((kind, pat, "|".join(f"(?:{p})" for p in earlier) or "(?!)"))
        earlier.append(pat)
    return out


def hop_outcome(hop: dict) -> str:
    """A hop as the script can see it: the migration's end, then whether the guest showed life."""
    if (hop.get("qmp") or {}).get("status") != "completed":
        return "failed"
    if hop.get("destination_alive") is False:
        return "completed, destination ended"
    return "completed, alive" if (hop.get("liveness") or {}).get("beats") else "completed, silent"


def machine_dir(name: str) -> str:
    """Where a machine's files are inside the cell directory: the first machine in it, others below."""
    return "" if name == "A" else name


def hops(record: dict) -> list[dict]:
    """The hops caskit made, as the script replays them."""
    mig = record.get("migration") or {}
    out = []
    for h in mig.get("hops") or []:
        uri = str(h.get("uri") or "")
        out.append({"name": h["name"], "src": h["source"], "dst": h["destination"],
                    "kind": "file" if uri.startswith("exec:") else "live",
                    "outcome": hop_outcome(h), "across": h.get("destination_host") != h.get("source_host"),
                    "to": f"{h.get('destination_host')} ({h.get('destination_build')})"})
    return out


def _jsonl(path: Path) -> list[dict]:
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict):
            out.append(e)
    return out


def _first_migrate_wall(cell_dir: Path) -> float | None:
    """Wall time of the first `migrate` (or a refused one's) sent to the first machine's QMP."""
    for e in _jsonl(cell_dir / "qmp.jsonl"):
        if (e.get("send") or {}).get("execute") == "migrate":
            try:
                return float(e["t"])
            except (KeyError, TypeError, ValueError):
                return None
    return None


def replay_steps(cell_dir: Path, record: dict) -> list[tuple[str, str]]:
    """What caskit did to the first machine up to the first hop, in order: ("guest", COMMAND)
    for a guest command, ("qmp", JSON) for a QMP command that changed the machine (a workload's
    device_add, qom-set, system_reset...). ck-observe and the kernel log reads are left to the
    script."""
    until = _first_migrate_wall(cell_dir) if record.get("migration") else None
    timed: list[tuple[float, int, str, str]] = []
    for i, e in enumerate(_jsonl(cell_dir / "console-sent.jsonl")):
        cmd = str(e.get("sent", "")).rstrip("\n").split(" ", 1)[-1]
        # ck-observe, ck-kmsg and dmesg only read; the script observes by itself at the end.
        if cmd and cmd not in ("ck-observe", "ck-kmsg", "dmesg") and "\n" not in cmd:
            timed.append((float(e.get("t", 0)), i, "guest", cmd))
    for i, e in enumerate(_jsonl(cell_dir / "qmp.jsonl")):
        send = e.get("send")
        if isinstance(send, dict) and send.get("execute") in QMP_REPLAYED:
            msg = {"execute": send["execute"], **({"arguments": send["arguments"]} if send.get("arguments") else {})}
            timed.append((float(e.get("t", 0)), i, "qmp", json.dumps(msg)))
    timed.sort(key=lambda x: (x[0], x[2] != "qmp", x[1]))
    return [(kind, text) for t, _, kind, text in timed if until is None or t < until]


def guest_commands(cell_dir: Path, record: dict) -> list[str]:
    """The guest commands among the replay's steps."""
    return [text for kind, text in replay_steps(cell_dir, record) if kind == "guest"]


def record_workloads(record: dict) -> list[str]:
    w = record.get("workloads") or []
    return [x["name"] if isinstance(x, dict) else str(x) for x in w]


def kit_files(kit: dict) -> list[tuple[str, str, str]]:
    """[(variable, file name, sha256)] of the kit's kernel and initramfs."""
    files = (kit.get("manifest") or {}).get("files") or {}
    out = []
    for varname, key in (("KERNEL", "kernel"), ("INITRD", "initrd")):
        path = kit.get(key)
        if not path:
            continue
        name = Path(path).name
        digest = files.get(name) or _sha256(Path(path))
        if digest:
            out.append((varname, name, digest))
    return out


_HASHES: dict[tuple[str, int, int], str] = {}


def _sha256(p: Path) -> str | None:
    """A user kit's file has no manifest hash: hashed once per process (path, size, mtime)."""
    try:
        st = p.stat()
    except OSError:
        return None
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _one_line(text) -> str:
    return re.sub(r"\s+", " ", str(text or "")).strip()


def _expected_text(e: dict) -> str:
    if e.get("mode"):
        return f"mode {e['mode']}" + (f", platform byte 23 {e['byte23']}" if e.get("byte23") else "") + (
            f", {e['irqchip']} controller" if e.get("irqchip") else "")
    if e.get("error"):
        return f"refused at {e.get('stage')}: {e['error']}"
    return _one_line(e.get("skip") or e.get("blocked") or "nothing predicted")


def _observed_text(o: dict) -> str:
    if o.get("mode"):
        host = o.get("host") or {}
        return f"mode {o['mode']}" + (f", platform byte 23 {o['platform_support']}" if o.get("platform_support") else "") + (
            f", {host['irqchip']} controller" if host.get("irqchip") else "")
    return _one_line(o.get("error") or "nothing")


def render(record: dict, machines: dict[str, list[str]], kit: dict, *, run_id: str = "", timeouts: dict | None = None,
           host: dict | None = None, commands: list[str] | None = None,
           steps: list[tuple[str, str]] | None = None) -> str:
    """The script for one cell. `machines`: each machine's recorded argv by name ("A" first);
    `steps` (or `commands`, guest commands alone) what to replay before observing."""
    if steps is None:
        steps = [("guest", c) for c in commands or []]
    commands = [text for kind, text in steps if kind == "guest"]
    t = {"boot": 90.0, "command": 30.0, "liveness": 10.0, **(timeouts or {})}
    home = machines.get("A", [""])[0]
    home_data = _value_after(machines.get("A", []), "-L")
    peer = next((a for a in machines.values() if a and a[0] != home), None)
    fns, disks = [], set()
    for name, argv in machines.items():
        is_peer = bool(argv) and argv[0] != home
        rw = standalone_argv(argv, name, qemu_var="QEMU_PEER" if is_peer else "QEMU",
                             data_var="QEMU_PEER_DATA" if is_peer else "QEMU_DATA", name=record["id"])
        disks.update(rw.disks)
        fns.append({"name": name, "fn": re.sub(r"\W", "_", name), "words": shell_words(rw.words)})
    e, o = record.get("expected") or {}, record.get("observed") or {}
    files = kit_files(kit)
    ctx = {
        "cell_id": record["id"], "run_id": run_id, "verdict": record.get("verdict", ""),
        "reason": _one_line(record.get("reason")), "host": record.get("host", ""),
        "kvm_mode": (host or {}).get("kvm_mode") or "", "build": record.get("qemu_version") or "",
        "qemu_axis": str((record.get("axes") or {}).get("qemu", "")),
        "expected": _one_line(_expected_text(e)), "rule": _one_line(e.get("rule")), "source": _one_line(e.get("source")),
        "expected_error": _one_line(e.get("error")), "observed": _observed_text(o),
        "qemu": shlex.quote(home), "qemu_data": shlex.quote(home_data or ""),
        "peer": shlex.quote(peer[0]) if peer else "", "peer_data": shlex.quote(_value_after(peer, "-L") or "") if peer else "",
        "kit_key": str(kit.get("key") or ""), "kit_files": files,
        "machines": fns, "disks": sorted(disks), "disk_mib": DISK_MIB,
        "hops": hops(record), "plan": (record.get("migration") or {}).get("plan") or record.get("migration_plan") or "none",
        "recorded": recorded_outcome(record), "unchecked": [_one_line(u) for u in unchecked(record)],
        "kernel_patterns": kernel_patterns(), "commands": [shlex.quote(c) for c in (commands or [])],
        "commands_raw": [_one_line(c) for c in (commands or [])],
        "steps": [(kind, shlex.quote(text)) for kind, text in steps],
        "steps_raw": [(kind, _one_line(text)) for kind, text in steps],
        "workloads": record_workloads(record), "qmp_driven": sorted(set(record_workloads(record)) & QMP_DRIVEN),
        "boot_timeout": int(t["boot"]), "command_timeout": int(max(t["command"], 30)),
        "window": int(max(t["liveness"], 1)), "q": shlex.quote,
        "known_issues": known_issues_of(record),
    }
    return env().get_template("reproduce.sh.j2").render(**ctx).rstrip("\n") + "\n"


def _value_after(argv: list[str] | None, opt: str) -> str | None:
    if not argv:
        return None
    for a, b in zip(argv, argv[1:]):
        if a == opt:
            return b
    return None


def not_run(record: dict) -> str:
    """A cell caskit never started QEMU for (SKIP, a host down, a blocked build): the script says why."""
    why = _one_line(record.get("reason") or (record.get("observed") or {}).get("error") or "not run")
    return ("#!/usr/bin/env bash\n"
            f"# caskit cell {record['id']}: {record.get('verdict', '')}. caskit never started QEMU for it,\n"
            "# so there is no command line to reproduce.\n"
            f"echo {shlex.quote('reproduce: caskit did not run this cell: ' + why)} >&2\n"
            "exit 2\n")


def machines_of(cell_dir: Path) -> dict[str, list[str]]:
    """Every machine's recorded argv in the cell directory: "A" (the first), then one per subdirectory."""
    out: dict[str, list[str]] = {}
    first = cell_dir / "qemu-argv.txt"
    if first.exists():
        out["A"] = first.read_text().splitlines()
    for p in sorted(cell_dir.glob("*/qemu-argv.txt")):
        out[p.parent.name] = p.read_text().splitlines()
    return out


def script_for(record: dict, cell_dir: Path, kit: dict, *, run_id: str = "", timeouts: dict | None = None,
               host: dict | None = None) -> str:
    machines = machines_of(cell_dir)
    if "A" not in machines:
        return not_run(record)
    return render(record, machines, kit, run_id=run_id, timeouts=timeouts, host=host,
                  steps=replay_steps(cell_dir, record))


def _write(cell_dir: Path, text: str) -> Path:
    p = cell_dir / SCRIPT
    p.write_text(text)
    p.chmod(0o755)
    return p


def write_for(ctx, record: dict) -> None:
    """cellrun's call when a cell ends: reproduce.sh beside its logs, named in record["logs"].
    Never raises: a reproducer that cannot be written must not cost the cell its result."""
    cell_dir = ctx.store.cell_dir(record["id"])
    try:
        kit = {}
        if ctx.kit is not None:
            kit = {"key": ctx.kit.key, "kernel": str(ctx.kit.kernel),
                   "initrd": str(ctx.kit.initrd) if ctx.kit.initrd else None, "manifest": ctx.kit.manifest}
        text = script_for(record, cell_dir, kit, run_id=ctx.run_id, timeouts=ctx.timeouts,
                          host={"kvm_mode": getattr(ctx.facts, "kvm_mode", None)})
        p = _write(cell_dir, text)
        record.setdefault("logs", {})["reproduce"] = str(p.relative_to(ctx.store.out))
    except Exception as e:  # noqa: BLE001 -- recorded beside the cell, never fatal to it
        (cell_dir / "reproduce-error.txt").write_text(f"reproduce.sh could not be written: {e!r}\n")


def write_from_run(out: Path, run: dict, record: dict) -> Path:
    """reproduce.sh for a cell of an earlier run (one from before reproducers, for a bundle)."""
    cell_dir = Path(out) / "cells" / record["id"]
    text = script_for(record, cell_dir, run.get("kit") or {}, run_id=str(run.get("id", "")),
                      timeouts=matrix_settings(run, record.get("matrix"))[0], host=(run.get("hosts") or {}).get(record.get("host")))
    return _write(cell_dir, text)
