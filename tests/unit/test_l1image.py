"""The pure parts of caskit's emulated POWER9 KVM hosts: the L1 image's composition (ELF needs,
module order, merged /usr, the per-host archive), the L1 QEMU argv from templates/, the state
file, and the parser of the kvmcaps probe's output."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cpio, debian_kernel, elf
from harness.emulated import image as l1image, kvmcaps
from harness.debfetch import Resolved
from harness.errors import HostError, KitError, ObserveError
from harness.emulated import host as emulated

from .test_cpio import read_newc

# -- kvmcaps ------------------------------------------------------------------------------------

# Shapes of what kvmcaps printed inside the two emulated hosts (trimmed to the lines that decide).
NESTED = """probe=kvmcaps 1
cpu=POWER9 (architected), altivec supported
platform=pSeries
model=IBM pSeries (emulated by qemu)
MMU=Radix
cpus=2
opal=0
kvm_hv.nested=Y
module.kvm_hv=1
module.kvm_pr=0
dmesg.xive.0=xive: Using IRQ range [0-1]
dmesg.xive.1=xive: Interrupt handling initialized with spapr backend
dev_kvm=ok
api_version=12
sys.KVM_CAP_IRQ_XICS=1
sys.KVM_CAP_PPC_NESTED_HV=1
sys.KVM_CAP_PPC_IRQ_XIVE=0
vm.hv=ok
vm.KVM_CAP_IRQ_XICS=1
vm.KVM_CAP_PPC_NESTED_HV=1
vm.KVM_CAP_PPC_IRQ_XIVE=0
vm.KVM_CAP_PPC_SMT_POSSIBLE=15
vm.cpu_char=character:0xbc40000000000000/0xff40000000000000 behaviour:0xe400000000000000/0xe400000000000000
device.xics.test=ok
device.xics.create=ok
device.xive.test=error:ENODEV:19
device.xive.create=error:ENODEV:19
"""

POWERNV = """probe=kvmcaps 1
cpu=POWER9, altivec supported
platform=PowerNV
model=IBM PowerNV (emulated by qemu)
firmware=OPAL
cpus=2
opal=1
kvm_hv.nested=Y
module.kvm_hv=1
module.kvm_pr=0
dmesg.xive.0=xive: Interrupt handling initialized with native backend
dev_kvm=ok
sys.KVM_CAP_IRQ_XICS=1
sys.KVM_CAP_PPC_IRQ_XIVE=1
vm.hv=ok
vm.KVM_CAP_IRQ_XICS=1
vm.KVM_CAP_PPC_IRQ_XIVE=1
device.xics.test=ok
device.xics.create=ok
device.xive.test=ok
device.xive.create=ok
"""


def test_kvmcaps_nested_hv_has_in_kernel_xics_but_no_xive():
    c = kvmcaps.parse(NESTED)
    assert (c.kvm_mode, c.in_kernel_xics, c.in_kernel_xive) == ("hv-nested", True, False)
    assert (c.platform, c.opal, c.nested_param, c.xive_backend) == ("pSeries", False, True, "spapr")
    assert c.cap("PPC_IRQ_XIVE") == 0 and c.cap("KVM_CAP_PPC_SMT_POSSIBLE") == 15
    assert c.errors["device.xive.create"] == "ENODEV:19"
    assert c.raw["vm.cpu_char"].startswith("character:0xbc4")  # values may hold ':' and '='-free text


def test_kvmcaps_powernv_offers_the_xive_native_device():
    c = kvmcaps.parse(POWERNV)
    assert (c.kvm_mode, c.in_kernel_xics, c.in_kernel_xive) == ("hv", True, True)
    assert (c.opal, c.xive_backend, c.errors) == (True, "native", {})


def test_kvmcaps_the_vm_answer_wins_over_dev_kvm():
    # PowerPC KVM answers some capabilities per VM type, and QEMU asks the VM.
    c = kvmcaps.parse(POWERNV.replace("vm.KVM_CAP_PPC_IRQ_XIVE=1", "vm.KVM_CAP_PPC_IRQ_XIVE=0"))
    assert c.cap("PPC_IRQ_XIVE") == 0 and not c.in_kernel_xive


def test_kvmcaps_a_capability_without_a_working_device_is_not_in_kernel():
    c = kvmcaps.parse(POWERNV.replace("device.xive.create=ok", "device.xive.create=error:EBUSY:16"))
    assert not c.in_kernel_xive and c.errors == {"device.xive.create": "EBUSY:16"}


@pytest.mark.parametrize("text, mode", [
    ("probe=kvmcaps 1\nplatform=PowerNV\ndev_kvm=error:ENOENT:2\n", "tcg-only"),
    ("probe=kvmcaps 1\nplatform=pSeries\nmodule.kvm_hv=0\nmodule.kvm_pr=1\ndev_kvm=ok\nvm.hv=error:EINVAL:22\n", "pr"),
    ("probe=kvmcaps 1\nplatform=pSeries\nmodule.kvm_hv=1\ndev_kvm=ok\nvm.hv=error:EINVAL:22\n", "tcg-only"),
])
def test_kvmcaps_modes_without_a_working_hv_vm(text, mode):
    assert kvmcaps.parse(text).kvm_mode == mode


@pytest.mark.parametrize("text", ["", "api_version=12\n", "Segmentation fault\n", "probe=kvmcaps 2\n"])
def test_kvmcaps_refuses_what_is_not_its_output(text):
    with pytest.raises(ObserveError):
        kvmcaps.parse(text)


# -- ELF and modules ----------------------------------------------------------------------------

HOST_PROGRAM = Path(shutil.which("true") or "/bin/true").resolve()


def test_elf_info_reads_needed_libraries_and_interpreter_of_a_real_program():
    info = elf.elf_info(HOST_PROGRAM.read_bytes())
    assert info is not None and "libc.so.6" in info.needed
    assert info.interpreter and info.interpreter.startswith("/lib")


def test_elf_info_of_other_files():
    assert elf.elf_info(b"#!/bin/sh\n") is None
    with pytest.raises(KitError, match="64-bit little-endian"):
        elf.elf_info(b"\x7fELF\x01\x01" + bytes(64))


def test_elf_info_reads_a_kernel_modules_modinfo(tmp_path):
    if not shutil.which("gcc"):
        pytest.skip("no gcc to build an object file with a .modinfo section")
    src = tmp_path / "m.c"
    src.write_text('__attribute__((section(".modinfo"), used)) static const char mi[] = '
                   '"depends=kvm,virtio\\0name=kvm_hv\\0";\n')
    subprocess.run(["gcc", "-c", "-o", str(tmp_path / "m.o"), str(src)], check=True)
    info = elf.elf_info((tmp_path / "m.o").read_bytes())
    assert info is not None and info.modinfo == ("depends=kvm,virtio", "name=kvm_hv")


def test_module_order_puts_dependencies_first_and_skips_builtins():
    depends = {
        "kvm_hv": ("kvm",),
        "kvm": (),
        "virtio_net": ("net_failover", "virtio", "virtio_ring"),
        "net_failover": ("failover",),
        "failover": (),
        "virtio_ring": (),
        # virtio is built in: not in the map
    }
    order = debian_kernel.module_order(("kvm-hv", "virtio_net"), depends)
    assert order == ["kvm", "kvm_hv", "failover", "net_failover", "virtio_ring", "virtio_net"]


def test_module_order_refuses_a_cycle():
    with pytest.raises(KitError, match="cycle"):
        debian_kernel.module_order(("a",), {"a": ("b",), "b": ("a",)})


@pytest.mark.parametrize("rel, out", [
    ("bin/busybox", "usr/bin/busybox"), ("lib64/ld64.so.2", "usr/lib64/ld64.so.2"),
    ("lib/powerpc64le-linux-gnu/libc.so.6", "usr/lib/powerpc64le-linux-gnu/libc.so.6"),
    ("usr/sbin/sshd", "usr/sbin/sshd"), ("etc/passwd", "etc/passwd"), ("bin", "bin"), ("binary/x", "binary/x"),
])
def test_merged_usr(rel, out):
    assert l1image.merged(rel) == out


@pytest.mark.parametrize("rel, pattern, hit", [
    ("usr/lib/python3.11/os.py", "usr/lib/python3.*/**", True),
    ("usr/lib/python3.11/email/mime/text.py", "usr/lib/python3.*/**", True),
    ("usr/lib/python3.11", "usr/lib/python3.*/**", False),
    ("usr/bin/python3.11", "usr/bin/python3.*", True),
    ("usr/bin/python3.11/x", "usr/bin/python3.*", False),  # '*' stays within one path component
    ("usr/bin/qemu-system-ppc", "usr/bin/qemu-system-ppc64", False),
])
def test_take_patterns(rel, pattern, hit):
    assert l1image._match(rel, pattern) is hit


def _fake_packages(tmp_path: Path) -> dict[str, Path]:
    """Two 'unpacked packages' built from this machine's own program and C library: a program
    package, and a library package with the libraries in /usr/lib and the loader link in lib64."""
    info = elf.elf_info(HOST_PROGRAM.read_bytes())
    assert info is not None and info.interpreter
    prog, libs = tmp_path / "prog", tmp_path / "libc"
    (prog / "usr/bin").mkdir(parents=True)
    shutil.copy(HOST_PROGRAM, prog / "usr/bin/prog")
    (libs / "usr/lib").mkdir(parents=True)
    (libs / "lib64").mkdir(parents=True)
    found = {}
    for line in subprocess.run(["ldd", str(HOST_PROGRAM)], capture_output=True, text=True).stdout.splitlines():
        parts = line.split()
        path = next((p for p in parts if p.startswith("/")), None)
        if path:
            found[Path(path).name if "=>" in parts else Path(info.interpreter).name] = Path(path).resolve()
    for name, path in found.items():
        shutil.copy(path, libs / "usr/lib" / name)
    loader = Path(info.interpreter).name
    (libs / "lib64" / loader).symlink_to(f"/usr/lib/{loader}")
    return {"prog": prog, "libc": libs}


def test_compose_takes_the_named_files_and_every_library_they_need(tmp_path):
    if not shutil.which("ldd"):
        pytest.skip("no ldd")
    roots = _fake_packages(tmp_path)
    tree = l1image.compose(roots, {"prog": ("usr/bin/prog",)})
    assert tree.origin["usr/bin/prog"] == "prog"
    assert "usr/lib/libc.so.6" in tree.entries and tree.origin["usr/lib/libc.so.6"] == "libc"
    interp = elf.elf_info(HOST_PROGRAM.read_bytes()).interpreter
    # The loader is found where the program's header says, through a link if need be.
    at = l1image.merged(interp.lstrip("/"))
    assert at in tree.entries
    paths = {e.path for e in tree.with_parents()}
    assert {"usr", "usr/bin", "usr/lib"} <= paths  # every parent directory is an entry of its own


def test_compose_refuses_a_program_whose_library_no_package_has(tmp_path):
    if not shutil.which("ldd"):
        pytest.skip("no ldd")
    roots = _fake_packages(tmp_path)
    (roots["libc"] / "usr/lib/libc.so.6").unlink()
    with pytest.raises(KitError, match="needs libc.so.6"):
        l1image.compose(roots, {"prog": ("usr/bin/prog",)})


def test_compose_refuses_a_pattern_that_matches_nothing(tmp_path):
    (tmp_path / "p/usr/bin").mkdir(parents=True)
    with pytest.raises(KitError, match="nothing matches"):
        l1image.compose({"p": tmp_path / "p"}, {"p": ("usr/bin/sshd",)})
    with pytest.raises(KitError, match="no package"):
        l1image.compose({"p": tmp_path / "p"}, {"q": ("x",)})


def test_recipe_key_follows_the_l1_files_and_the_resolved_packages():
    files = {"rootfs/init": b"#!/bin/sh\n", "kvmcaps.c": b"int main(void){return 0;}\n"}
    pkgs = {"linux-image-6.1.0-57-powerpc64le": Resolved("linux-image-6.1.0-57-powerpc64le", "6.1.192-3", "ab" * 32)}
    k = l1image.recipe_key(pkgs, files)
    assert k == l1image.recipe_key(dict(pkgs), dict(files))
    assert k != l1image.recipe_key(pkgs, {**files, "rootfs/init": b"#!/bin/sh\n# changed\n"})
    # An archive update (a new version, or the same version rebuilt) is a new image.
    newer = {"linux-image-6.1.0-57-powerpc64le": Resolved("linux-image-6.1.0-57-powerpc64le", "6.1.192-4", "ab" * 32)}
    rebuilt = {"linux-image-6.1.0-57-powerpc64le": Resolved("linux-image-6.1.0-57-powerpc64le", "6.1.192-3", "cd" * 32)}
    assert len({k, l1image.recipe_key(newer, files), l1image.recipe_key(rebuilt, files)}) == 3


def test_the_l1_files_are_outside_the_guest_kit():
    # The guest kit packs every file of guest_tests/: the L1's files must not change its key.
    from harness.resources import GUEST_TESTS

    assert not l1image.L1_DIR.resolve().is_relative_to(GUEST_TESTS.resolve())
    assert (l1image.L1_DIR / "rootfs" / "init").is_file() and (l1image.L1_DIR / "kvmcaps.c").is_file()


# -- the per-host archive -----------------------------------------------------------------------

IDENT = l1image.HostIdentity("l1a", "powernv9", b"-----PRIVATE-----\n", b"ssh-ed25519 AAAAhost l1a\n",
                             b"ssh-ed25519 AAAActl controller\n")


def test_identity_archive_keeps_secrets_private():
    members = {m["name"]: m for m in read_newc(cpio.pack(l1image.identity_entries(IDENT)))}
    assert stat.S_IMODE(members["etc/ssh/ssh_host_ed25519_key"]["mode"]) == 0o600
    assert stat.S_IMODE(members["root/.ssh/authorized_keys"]["mode"]) == 0o600
    assert stat.S_IMODE(members["root/.ssh"]["mode"]) == 0o700
    assert members["root/.ssh/authorized_keys"]["data"] == IDENT.authorized_key
    assert members["etc/caskit-l1/kind"]["data"] == b"powernv9\n"


def test_host_initrd_is_the_identity_archive_then_the_image(tmp_path):
    shared = tmp_path / "initrd.cpio.zst"
    shared.write_bytes(b"\x28\xb5\x2f\xfd" + b"compressed image")
    img = l1image.Image("k", tmp_path / "vmlinux", shared, {})
    out = l1image.host_initrd(img, IDENT, tmp_path / "host-initrd")
    data = out.read_bytes()
    head = cpio.pack(l1image.identity_entries(IDENT))
    assert data == head + shared.read_bytes()
    assert len(head) % 4 == 0  # the kernel looks for the next archive on a 4-byte boundary
    assert not list(tmp_path.glob("*.part"))


# -- the L1's QEMU argv -------------------------------------------------------------------------

PATHS = dict(kernel=Path("/c/img/vmlinux"), initrd=Path("/c/h/initrd"), console_sock=Path("/c/h/console.sock"),
             console_log=Path("/c/h/console.log"), qmp_sock=Path("/c/h/qmp.sock"))


def _opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_nested_hv_argv():
    argv = emulated.render_argv(emulated.KINDS["nested-hv"], binary="qemu-system-ppc64", firmware_dir=None,
                                tag="caskit-l1:n1", port=40022, **PATHS)
    assert argv[0] == "qemu-system-ppc64" and "-L" not in argv
    assert _opt(argv, "-machine") == ["pseries,cap-nested-hv=on,x-vof=on"]
    assert _opt(argv, "-cpu") == ["POWER9"] and _opt(argv, "-name") == ["caskit-l1:n1"]
    assert _opt(argv, "-netdev") == ["user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22"]
    assert _opt(argv, "-device") == ["virtio-net-pci,netdev=n0,romfile="]
    assert _opt(argv, "-chardev") == ["socket,id=con0,path=/c/h/console.sock,server=on,wait=off,"
                                      "logfile=/c/h/console.log"]
    assert _opt(argv, "-append") == ["console=hvc0"] and "-S" in argv and "-nodefaults" in argv


def test_powernv9_argv_keeps_the_machines_own_bmc():
    argv = emulated.render_argv(emulated.KINDS["powernv9"], binary="/q10/bin/qemu-system-ppc64",
                                firmware_dir="/q10/share/qemu", tag="caskit-l1:p1", port=40023, **PATHS)
    assert _opt(argv, "-L") == ["/q10/share/qemu"] and _opt(argv, "-machine") == ["powernv9"]
    # -nodefaults would drop the IPMI BMC simulator that powers the machine off; adding another
    # makes QEMU 10 refuse to start (cas-rules section 8).
    assert "-nodefaults" not in argv and "ipmi-bmc-sim" not in " ".join(argv)
    assert _opt(argv, "-audio") == ["none"] and "-cpu" not in argv
    assert _opt(argv, "-initrd") == ["/c/h/initrd"]


def test_l1_argv_refuses_a_path_qemu_would_split():
    with pytest.raises(HostError, match="comma"):
        emulated.render_argv(emulated.KINDS["nested-hv"], binary="q", firmware_dir=None, tag="t", port=1,
                             **{**PATHS, "console_sock": Path("/c/a,b/console.sock")})


def test_powernv9_l2s_get_the_mitigation_caps_kvm_can_provide():
    assert set(emulated.KINDS["powernv9"].l2_machine_options) == {
        "cap-cfpc=broken", "cap-sbbc=broken", "cap-ibs=broken", "cap-ccf-assist=off"}


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", "x" * 41, "a;b"])
def test_host_names_are_plain(name):
    with pytest.raises(HostError):
        emulated.EmulatedHost(name, "powernv9")


def test_unknown_kind():
    with pytest.raises(HostError, match="kind"):
        emulated.EmulatedHost("h", "powernv10")


# -- the state file -----------------------------------------------------------------------------

def test_state_file_round_trip_and_pid_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("CASKIT_CACHE", str(tmp_path))
    (emulated.hosts_dir() / "h1").mkdir(parents=True)
    st = emulated.L1State("h1", "nested-hv", "up", os.getpid(), 40000, "caskit-l1:h1", "k", str(tmp_path), 1.0)
    st.save()
    assert emulated.L1State.load("h1") == st
    assert [s.name for s in emulated.list_states()] == ["h1"]
    # This process is alive but carries no such tag: never taken for the host (PIDs get reused).
    assert not emulated.running(st)
    assert emulated.L1State.load("nope") is None


def test_wait_exit_follows_any_process(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert emulated._wait_exit(p.pid, 0.05) is False
        p.stdin.close()
        assert emulated._wait_exit(p.pid, 10) is True
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize("mode,kvm,hv,pr,missing", [
    ("hv-nested", 1, 1, 0, None), ("hv-nested", 1, 0, 0, "kvm_hv"), ("hv", 0, 0, 0, "/dev/kvm and kvm_hv"),
    ("pr", 1, 0, 1, None), ("pr", 1, 0, 0, "kvm_pr"), ("pr", 0, 0, 0, "/dev/kvm and kvm_pr"),
    ("hv-nested", 1, 0, 1, "kvm_hv"),  # a PR VM is no HV host
])
def test_an_l1_ready_line_without_kvm_names_what_is_missing(mode, kvm, hv, pr, missing):
    line = f"CASKIT-L1-READY name=h kind=k image=abc kvm={kvm} kvm_hv={hv} kvm_pr={pr} uptime=4.2".encode()
    assert emulated.missing_kvm(emulated.READY_RE.search(line), mode) == missing


# The powernv9 L1's console when its boot was taken for a timeout (2026-12-07): the kernel's
# link-up message landed inside the ready line that /init was writing.
INTERLEAVED = (b"[   13.067836] virtio-pci 0005:01:00.0: enabling device (0100 -> 0102)\r\n"
               b"CASKIT-L1-READY name=it-powernv9 kind=powernv9 image=55d9d91b1352d885 kvm=1 kvm_hv=1 kvm_pr=0 "
               b"uptime=[   14.620341] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready\r\n12.14\r\n"
               b"\r\n\r\nBusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) built-in shell (ash)\r\n")


def test_the_ready_line_is_read_with_the_kernel_lines_the_console_put_into_it_taken_out():
    assert emulated.READY_RE.search(INTERLEAVED) is None  # what the boot waited for in vain
    m = emulated.ready_marker(INTERLEAVED)
    assert (m.group("name"), m.group("image"), m.group("kvm_hv"), m.group("uptime")) == \
        (b"it-powernv9", b"55d9d91b1352d885", b"1", b"12.14")
    # Split anywhere, even inside a field, it reads the same.
    line = INTERLEAVED.split(b"\r\n")[1].split(b"uptime=")[0] + b"uptime=12.14\r\n"
    kmsg = b"[    9.000001] random: crng init done\r\n"
    for cut in range(1, len(line) - 2):
        assert emulated.ready_marker(line[:cut] + kmsg + line[cut:]).group("uptime") == b"12.14", cut
    # Until the line has ended, the uptime may still be growing: no marker yet.
    assert emulated.ready_marker(INTERLEAVED.split(b"12.14")[0] + b"12.1") is None
