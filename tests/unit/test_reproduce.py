"""harness/reproduce.py: the recorded argv made standalone, the outcomes the script compares, and
a rendered script that bash accepts (the real runs are in tests/integration/test_reproduce.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from harness import reproduce
from harness.reproduce import shell_word, standalone_argv, var

ARGV = ["/opt/qemu/bin/qemu-system-ppc64", "-L", "/opt/qemu/share", "-name", "caskit:run1:cell-x",
        "-machine", "pseries,x-vof=on,ic-mode=dual", "-accel", "tcg", "-cpu", "POWER9", "-smp", "2", "-m", "1024M",
        "-nodefaults", "-display", "none", "-S",
        "-chardev", "socket,id=con0,path=/tmp/ck-abc/console.sock,server=on,wait=off", "-serial", "chardev:con0",
        "-chardev", "socket,id=hb0,path=/tmp/ck-abc/heartbeat.sock,server=on,wait=off", "-serial", "chardev:hb0",
        "-qmp", "unix:/tmp/ck-abc/qmp.sock,server=on,wait=off",
        "-kernel", "/root/.cache/caskit/kits/k/vmlinux", "-initrd", "/root/.cache/caskit/kits/k/initrd.gz",
        "-append", "console=hvc0 xive=off",
        "-drive", "file=/tmp/ck-s-1/disk.raw,if=none,id=ckdisk0,format=raw",
        "-device", "virtio-blk-pci,drive=ckdisk0,id=ckblk0,bus=pci.0", "-incoming", "defer"]


@pytest.fixture(scope="module")
def rw():
    return standalone_argv(ARGV, "B", name="cell-x")


def after(words, opt):
    return [b for a, b in zip(words, words[1:]) if a == opt]


def test_no_path_of_the_run_is_left(rw):
    text = "\n".join(rw.words)
    for gone in ("/tmp/ck-abc", "/tmp/ck-s-1", ".cache/caskit", "/opt/qemu", "caskit:run1"):
        assert gone not in text


def test_console_on_stdio_qmp_on_fifos_heartbeat_to_a_file(rw):
    w = rw.words
    assert after(w, "-chardev") == ["stdio,id=con0,signal=off", f"file,id=hb0,path={var('WORK')}/B/heartbeat.log",
                                    f"pipe,id=ckqmp,path={var('WORK')}/B/qmp"]
    assert after(w, "-mon") == ["chardev=ckqmp,mode=control"] and "-qmp" not in w
    assert after(w, "-serial") == ["chardev:con0", "chardev:hb0"]
    assert rw.serial_files == ["heartbeat.log"]


def test_kit_binary_and_firmware_become_variables(rw):
    w = rw.words
    assert w[0] == var("QEMU") and after(w, "-L") == [var("QEMU_DATA")]
    assert after(w, "-kernel") == [var("KERNEL")] and after(w, "-initrd") == [var("INITRD")]
    assert after(w, "-name") == ["caskit-reproduce:cell-x:B"]


def test_everything_else_is_kept_as_it_ran(rw):
    w = rw.words
    for opt in ("-machine", "-accel", "-cpu", "-smp", "-m", "-append", "-device", "-incoming"):
        assert after(w, opt) == after(ARGV, opt)
    assert "-S" in w and "-nodefaults" in w


def test_a_disk_becomes_a_file_of_the_script(rw):
    assert after(rw.words, "-drive") == [f"file={var('WORK')}/disk.raw,if=none,id=ckdisk0,format=raw"]
    assert rw.disks == ["disk.raw"]


def test_a_peer_build_gets_its_own_variables():
    w = standalone_argv(ARGV, "B", qemu_var="QEMU_PEER", data_var="QEMU_PEER_DATA").words
    assert w[0] == var("QEMU_PEER") and after(w, "-L") == [var("QEMU_PEER_DATA")]


@pytest.mark.parametrize("word, shell", [
    ("plain", "plain"),
    ("console=hvc0 xive=off", "'console=hvc0 xive=off'"),
    (f"path={var('WORK')}/A/qmp", "path=\"${WORK}\"/A/qmp"),
    (var("KERNEL"), '"${KERNEL}"'),
    ("it's $HOME `x`", "'it'\"'\"'s $HOME `x`'"),
    ("", "''"),
])
def test_shell_words(word, shell):
    assert shell_word(word) == shell


def test_shell_words_survive_bash(tmp_path):
    words = ["a b", "it's", "$(touch x)", f"{var('WORK')}/f", "*"]
    script = f"WORK=/w; printf '%s\\n' {' '.join(reproduce.shell_words(words))}"
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["a b", "it's", "$(touch x)", "/w/f", "*"]
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- outcomes


@pytest.mark.parametrize("observed, outcome", [
    ({"mode": "xive"}, "mode xive"),
    ({"mode": None, "guest": {"mode": "xics"}}, "mode xics"),  # views disagree: the guest's, as the script sees it
    ({"error_kind": "QemuRefused", "stage": "qemu-start"}, "refused"),
    ({"exit_code": 1, "stage": "cas", "error": "x"}, "refused"),
    ({"error_kind": "GuestHang", "error": "the guest hung after its kernel started"}, "hang"),
    ({"error": "host down"}, "other"),
])
def test_recorded_outcome(observed, outcome):
    assert reproduce.recorded_outcome({"observed": observed}) == outcome


@pytest.mark.parametrize("hop, outcome", [
    ({"qmp": {"status": "failed"}}, "failed"),
    ({"qmp": {"status": "completed"}, "liveness": {"beats": 3}}, "completed, alive"),
    ({"qmp": {"status": "completed"}, "liveness": {"beats": 0}, "destination_alive": True}, "completed, silent"),
    ({"qmp": {"status": "completed"}, "destination_alive": False}, "completed, destination ended"),
])
def test_hop_outcome(hop, outcome):
    assert reproduce.hop_outcome(hop) == outcome


def _cell_dir(tmp_path: Path, migrate_at: float | None) -> Path:
    d = tmp_path / "cell"
    d.mkdir()
    sent = [(1.0, "ab.1 ck-observe"), (2.0, "ab.2 ck-modules"), (3.0, "ab.3 dmesg"), (4.0, "ab.4 ck-heartbeat"),
            (9.0, "ab.5 ck-observe"), (11.0, "ab.6 ck-ipi 50")]
    (d / "console-sent.jsonl").write_text("".join(json.dumps({"t": t, "sent": s + "\n"}) + "\n" for t, s in sent))
    if migrate_at:
        (d / "qmp.jsonl").write_text(json.dumps({"t": migrate_at, "send": {"execute": "migrate", "arguments": {}}}) + "\n")
    return d


def test_guest_commands_before_the_first_hop(tmp_path):
    d = _cell_dir(tmp_path, 10.0)
    assert reproduce.guest_commands(d, {"migration": {"plan": "roundtrip"}}) == ["ck-modules", "ck-heartbeat"]


def test_guest_commands_of_a_cell_without_migration(tmp_path):
    d = _cell_dir(tmp_path, None)
    assert reproduce.guest_commands(d, {"migration": None}) == ["ck-modules", "ck-heartbeat", "ck-ipi 50"]


def test_qmp_steps_that_change_the_machine_are_replayed_in_their_place(tmp_path):
    d = _cell_dir(tmp_path, None)
    qmp = [(0.5, {"execute": "qom-get", "arguments": {"path": "/machine", "property": "ic-mode"}}),
           (5.0, {"execute": "qom-set", "arguments": {"path": "/machine", "property": "append", "value": "xive=off"}}),
           (5.1, {"execute": "system_reset"}), (5.2, {"execute": "query-status"}),
           (12.0, {"execute": "human-monitor-command", "arguments": {"command-line": "info pic"}})]
    (d / "qmp.jsonl").write_text("".join(json.dumps({"t": t, "send": m}) + "\n" for t, m in qmp))
    steps = reproduce.replay_steps(d, {"workloads": [{"name": "reboot"}]})
    assert steps == [("guest", "ck-modules"), ("guest", "ck-heartbeat"),
                     ("qmp", '{"execute": "qom-set", "arguments": {"path": "/machine", "property": "append", "value": "xive=off"}}'),
                     ("qmp", '{"execute": "system_reset"}'), ("guest", "ck-ipi 50")]
    text = reproduce.render(RECORD, {"A": ARGV, "restore": ARGV}, KIT, run_id="run1", steps=steps)
    assert "    step_qmp A '{\"execute\": \"system_reset\"}'\n    step_guest A 'ck-ipi 50'\n" in text
    p = tmp_path / "reproduce.sh"
    p.write_text(text)
    subprocess.run(["bash", "-n", str(p)], check=True)


# ---------------------------------------------------------------- the script


RECORD = {"id": "cell-x", "verdict": "XFAIL", "reason": "hop B: no heartbeat\n[known issue k]", "host": "local",
          "axes": {"qemu": "system"}, "qemu_version": "7.2.22",
          "expected": {"mode": "xive", "rule": "guest-picks-xive", "source": "prom_init.c", "byte23": "0x80"},
          "observed": {"mode": "xive"},
          "migration": {"plan": "file", "known_issues": ["k"],
                        "hops": [{"name": "file", "source": "A", "destination": "restore", "uri": "exec:cat > /x",
                                  "qmp": {"status": "completed"}, "liveness": {"beats": 0}, "destination_alive": True}]}}
KIT = {"key": "k", "kernel": "/kits/k/vmlinux", "initrd": "/kits/k/initrd.gz",
       "manifest": {"files": {"vmlinux": "a" * 64, "initrd.gz": "b" * 64}}}


def test_the_script_is_bash(tmp_path):
    text = reproduce.render(RECORD, {"A": ARGV, "restore": ARGV}, KIT, run_id="run1", commands=["ck-ipi 5 > /tmp/x &"])
    p = tmp_path / "reproduce.sh"
    p.write_text(text)
    subprocess.run(["bash", "-n", str(p)], check=True)
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "RECORDED='mode xive'" in text and 'RECORDED="$RECORDED; hop file: completed, silent"' in text
    assert "hop file A restore file" in text
    assert "kit_file vmlinux " + "a" * 64 in text and "kit_file initrd.gz " + "b" * 64 in text
    assert "'ck-ipi 5 > /tmp/x &'" in text
    assert "#   caskit's verdict: XFAIL: hop B: no heartbeat [known issue k]" in text  # one comment line
    assert "/tmp/ck-abc" not in text and "caskit:run1" not in text


def test_a_cell_never_started_says_why(tmp_path):
    (tmp_path / "c").mkdir()
    text = reproduce.script_for({"id": "c", "verdict": "SKIP", "reason": "no KVM"}, tmp_path / "c", KIT)
    assert "caskit did not run this cell: no KVM" in text and "exit 2" in text
    out = subprocess.run(["bash", "-c", text], capture_output=True, text=True)
    assert out.returncode == 2


def test_kit_files_hash_a_user_kit(tmp_path):
    (tmp_path / "vmlinux").write_bytes(b"kernel")
    files = reproduce.kit_files({"kernel": str(tmp_path / "vmlinux"), "initrd": None, "manifest": {}})
    assert files == [("KERNEL", "vmlinux", hashlib.sha256(b"kernel").hexdigest())]


# -- issue 21 item 11: the recorded outcome is the failure's signature --------------------------

def _rec(verdict="FAIL", **observed):
    return {"id": "c", "verdict": verdict, "observed": {"mode": "xive", **observed}, "workloads": []}


def test_a_kernel_finding_is_part_of_the_recorded_outcome():
    oops = {"kind": "oops", "line": "Oops: Kernel access of bad area"}
    lock = {"kind": "soft-lockup", "line": "watchdog: BUG: soft lockup"}
    assert reproduce.recorded_outcome(_rec(kernel_findings=[lock, oops, oops])) == "mode xive; kernel oops,soft-lockup"
    assert reproduce.recorded_outcome(_rec("PASS")) == "mode xive"


@pytest.mark.parametrize("code,words", [(-6, "crashed SIGABRT"), (-11, "crashed SIGSEGV"), (134, "crashed SIGABRT"), (3, "exited 3")])
def test_how_qemu_ended_is_part_of_the_recorded_outcome(code, words):
    rec = {"id": "c", "verdict": "FAIL", "observed": {"mode": None, "error_kind": "QemuCrashed", "exit_code": code}}
    assert reproduce.recorded_outcome(rec) == words


def test_a_failed_workload_is_never_called_reproduced_by_the_script():
    rec = {**_rec(), "workloads": [{"name": "ipi", "verdict": "FAIL", "symptom": "ipi-stopped", "reason": "IPIs lost"}]}
    assert reproduce.unchecked(rec) == ["workload ipi: ipi-stopped"]
    assert reproduce.unchecked({**rec, "verdict": "PASS"}) == []


def test_the_scripts_kernel_patterns_name_a_line_as_caskit_does():
    import subprocess
    from harness import guestlog
    lines = ["watchdog: BUG: soft lockup - CPU#0 stuck for 22s!", "Kernel panic - not syncing: Fatal exception",
             "kernel BUG at mm/slub.c:42!", "INFO: task kworker/0:1 blocked for more than 120 seconds.", "all is well"]
    grep = 'printf "%s\\n" "$1" | grep -P -e "$2" | grep -q -v -P -e "$3"'
    for line in lines:
        hits = [k for k, pat, earlier in reproduce.kernel_patterns()
                if subprocess.run(["bash", "-c", grep, "sh", line, pat, earlier]).returncode == 0]
        assert hits == [f["kind"] for f in guestlog.findings([line])], (line, hits)
