"""The L0 QEMU caskit builds itself for the nested-papr hosts (harness/emulated/qemu_build.py):
the shipped patch, what the cache key covers, the source fetch's parsing and private deb-src
state, missing build tools named (exit 2 at the command line), the host facts that say the L0
is patched, and the known issue of the stock L0 that a patched L0 can no longer turn green.
The build itself runs in bootstrap (`--suite`) and is used by
tests/integration/test_nested_papr_host.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import cli, debfetch
from harness.cell import HostFacts
from harness.debfetch import PrivateApt, Source, SourceFile
from harness.emulated import host as emulated, qemu_build as qb
from harness.errors import ConfigError, KitError, MissingTools
from harness.migration import known_issues
from harness.report.overview import host_needs
from harness.resources import QEMU_PATCHES, qemu_patch_ids
from harness.resume import FACT_FIELDS, digest, facts_digest

MER_PATCH = "0001-target-ppc-Deliver-the-Mediated-External-interrupt-r.patch"
MER_ID = "target-ppc-Deliver-the-Mediated-External-interrupt-r"
RC_PATCH = "0002-target-ppc-Radix-no-store-permission-in-the-TLB-unti.patch"
TLB_PATCH = "0003-ppc-spapr-nested-H_TLB_INVALIDATE-flushes-every-vCPU.patch"
ALL_PATCHES = [MER_PATCH, RC_PATCH, TLB_PATCH]
TARBALL = SourceFile("http://deb.debian.org/debian/pool/main/q/qemu/qemu_10.0.2%2bds.orig.tar.xz",
                     "qemu_10.0.2+ds.orig.tar.xz", 39449628, "0901da33" + "0" * 50 + "c9b9f1")


def test_the_shipped_patch_is_caskits_without_a_sign_off_and_touches_target_ppc_only():
    text = (QEMU_PATCHES / MER_PATCH).read_text()
    preamble = text.split("\nFrom ", 1)[0]
    assert "caskit's own patch to QEMU" in preamble and "Signed-off-by" in preamble  # says it needs one
    assert "Signed-off-by:" not in text  # and carries none
    files = [line.split()[2][2:] for line in text.splitlines() if line.startswith("diff --git ")]
    assert files == ["target/ppc/cpu.h", "target/ppc/cpu_init.c", "target/ppc/excp_helper.c"]
    assert "POWERPC_EXCP_MEXT" in text and "LPCR_MER" in text
    assert qemu_patch_ids() == tuple(sorted([MER_ID, "ppc-spapr-nested-H_TLB_INVALIDATE-flushes-every-vCPU",
                                             "target-ppc-Radix-no-store-permission-in-the-TLB-unti"]))


@pytest.mark.parametrize("name, files, words", [
    (RC_PATCH, ["target/ppc/mmu-radix64.c"], ["R_PTE_C", "~PAGE_WRITE", "Generate storage interrupts for radix RC"]),
    (TLB_PATCH, ["hw/ppc/spapr_nested.c"], ["tlb_flush_all_cpus_synced", "KVMPPC_H_TLB_INVALIDATE"]),
])
def test_the_migration_patches_are_caskits_without_a_sign_off(name, files, words):
    text = (QEMU_PATCHES / name).read_text()
    assert "caskit's own patch to QEMU" in text.split("\nFrom ", 1)[0] and "Signed-off-by:" not in text
    assert [line.split()[2][2:] for line in text.splitlines() if line.startswith("diff --git ")] == files
    assert all(w in text for w in words)


def test_the_nested_papr_kinds_run_the_patched_l0_with_their_suites_firmware():
    for name in ("nested-papr", "nested-papr-p9"):
        k = emulated.KINDS[name]
        assert k.l0_build == "mer" and qb.RECIPES["mer"].suite == k.qemu_suite  # same Debian version's -L
    assert not any(k.l0_build for n, k in emulated.KINDS.items() if not n.startswith("nested-papr"))
    r = qb.recipe("mer")
    assert [p for p, _ in qb.patch_bytes(r)] == ALL_PATCHES and r.marker == b"MEXT"
    with pytest.raises(KitError, match="no QEMU build recipe 'nope'; recipes: mer"):
        qb.recipe("nope")


def test_the_key_changes_with_tarball_patches_and_configure_and_nothing_else(monkeypatch):
    r = qb.recipe("mer")
    patches = [(MER_PATCH, b"diff a\n")]
    base = qb.recipe_key(r, TARBALL, patches)
    assert base == qb.recipe_key(r, TARBALL, list(patches)) and len(base) == 16
    # The URI (a mirror) is not what is built: the same bytes, the same key.
    assert base == qb.recipe_key(r, SourceFile("http://mirror.example/q.tar.xz", TARBALL.name, TARBALL.size,
                                               TARBALL.sha256), patches)
    others = {
        qb.recipe_key(r, SourceFile(TARBALL.uri, TARBALL.name, TARBALL.size, "ab" * 32), patches),
        qb.recipe_key(r, TARBALL, [(MER_PATCH, b"diff b\n")]),
        qb.recipe_key(r, TARBALL, patches + [("0002-more.patch", b"diff c\n")]),
    }
    monkeypatch.setattr(qb, "CONFIGURE_ARGS", qb.CONFIGURE_ARGS + ("--enable-debug",))
    others.add(qb.recipe_key(r, TARBALL, patches))
    monkeypatch.setattr(qb, "RECIPE_VERSION", qb.RECIPE_VERSION + 1)
    others.add(qb.recipe_key(r, TARBALL, patches))
    assert base not in others and len(others) == 5


def test_the_configure_line_builds_the_ppc64_system_emulator_alone_without_downloads():
    args = qb.CONFIGURE_ARGS
    assert "--target-list=ppc64-softmmu" in args and "--disable-download" in args
    assert "--disable-install-blobs" in args  # the +ds tarball has no firmware blobs
    assert "--enable-slirp" in args  # the L1's sshd is reached through user networking


def test_apt_print_uris_lines_are_parsed_and_other_lines_skipped():
    text = ("NOTICE: 'qemu' packaging is maintained in the 'Git' version control system at:\n"
            "Need to get 39.6 MB of source archives.\n"
            "'http://deb.debian.org/debian/pool/main/q/qemu/qemu_10.0.2%2bds-2%2bdeb13u1%7ebpo12%2b1.dsc' "
            "qemu_10.0.2+ds-2+deb13u1~bpo12+1.dsc 11887 SHA256:" + "a9" * 32 + "\n"
            f"'{TARBALL.uri}' {TARBALL.name} {TARBALL.size} SHA256:{TARBALL.sha256}\n"
            "'http://x/y.tar.xz' y.tar.xz 12 MD5Sum:0123456789abcdef0123456789abcdef\n")
    files = debfetch.parse_source_uris(text)
    assert [f.name for f in files] == ["qemu_10.0.2+ds-2+deb13u1~bpo12+1.dsc", TARBALL.name]
    assert files[1] == TARBALL


def test_a_source_state_lists_deb_src_lines_and_its_own_index(tmp_path, monkeypatch):
    monkeypatch.setattr(debfetch, "host_sources", lambda *a: [
        Source("http://deb.debian.org/debian", "bookworm", ("main",), "/usr/share/keyrings/debian-archive-keyring.gpg")])
    monkeypatch.setattr(debfetch, "debian_codename", lambda: "bookworm")
    src = PrivateApt(tmp_path / "src", "amd64", ["bookworm-backports"], sources=True)
    assert src._sources_text() == ("deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                                   "http://deb.debian.org/debian bookworm-backports main\n")
    binaries = PrivateApt(tmp_path / "bin", "amd64", ["bookworm"])
    assert binaries._sources_text().startswith("deb [arch=amd64 signed-by=")
    lists = tmp_path / "src" / "state" / "lists"
    lists.mkdir(parents=True)
    (lists / "deb.debian.org_debian_dists_bookworm-backports_main_source_Sources.lz4").write_text("x")
    assert src.has_lists() and src.has_suite("bookworm-backports") and not src.has_suite("bookworm")
    assert not PrivateApt(tmp_path / "src", "amd64", ["bookworm-backports"]).has_lists()  # not a Packages index


def test_missing_build_tools_are_named_by_debian_package_and_meson_by_pip(monkeypatch):
    monkeypatch.setattr(qb.shutil, "which", lambda p: None if p == "ninja" else f"/usr/bin/{p}")
    monkeypatch.setattr(qb.Path, "exists", lambda self: "slirp" not in str(self))
    monkeypatch.setattr(qb, "meson_version", lambda: (1, 0, 1))  # bookworm's
    monkeypatch.setattr(qb, "PYTHON_DEPS", ("surely-not-installed-here",))
    missing = qb.missing_tools()
    assert missing[:2] == ["ninja-build", "libslirp-dev"]
    assert "meson >= 1.5" in missing[2] and "pip install 'caskit[l0]'" in missing[2] and "found 1.0.1" in missing[2]
    assert missing[3].startswith("surely-not-installed-here in ") and len(missing) == 4
    monkeypatch.setattr(qb, "PYTHON_DEPS", ())
    monkeypatch.setattr(qb, "meson_version", lambda: (1, 5, 0))
    monkeypatch.setattr(qb.shutil, "which", lambda p: f"/usr/bin/{p}")
    monkeypatch.setattr(qb.Path, "exists", lambda self: True)
    assert qb.missing_tools() == []


def test_a_build_without_its_tools_stops_before_fetching_and_the_cli_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(qb, "missing_tools", lambda: ["ninja-build", "libfdt-dev"])
    monkeypatch.setattr(qb, "_apts", lambda suite: pytest.fail("fetched before checking the tools"))
    with pytest.raises(MissingTools, match="the mer L0 QEMU needs ninja-build, libfdt-dev .scripts/bootstrap.sh"):
        qb._build_locked(qb.recipe("mer"), "k", "1:10.0.2", TARBALL, [], print, 2)

    def boom(*a, **k):
        raise MissingTools("building the mer L0 QEMU needs ninja-build (scripts/bootstrap.sh installs them)")
    monkeypatch.setattr(cli, "cmd_hosts", boom)
    assert cli.main(["hosts", "build", "nested-papr"]) == 2
    assert "needs ninja-build" in capsys.readouterr().err


def test_a_cached_build_says_what_it_is_and_why(tmp_path, monkeypatch):
    monkeypatch.setattr(qb, "builds_dir", lambda: tmp_path)
    d = tmp_path / "abc"
    d.mkdir()
    assert qb.load_cached("abc") is None  # no manifest
    (d / "manifest.json").write_text(json.dumps({
        "recipe": "mer", "version": "QEMU emulator version 10.0.2",
        "source": {"version": "1:10.0.2+ds-2+deb13u1~bpo12+1"},
        "patches": [{"file": MER_PATCH, "id": MER_ID, "sha256": "12" * 32}]}))
    assert qb.load_cached("abc") is None  # no binary
    (d / qb.TARGET).write_bytes(b"\x7fELF")
    b = qb.load_cached("abc")
    assert b is not None and b.patch_ids == (MER_ID,) and b.binary == d / qb.TARGET
    line = b.describe()
    assert line.startswith("QEMU emulator version 10.0.2, built by caskit (recipe mer, key abc)")
    assert f"patches/qemu/{MER_PATCH} (sha256 121212121212)" in line and "LPCR[MER]" in line


def test_ninja_status_lines_give_the_progress():
    assert qb.ninja_progress(b"[391/1732] Compiling C object libqemu-ppc64-softmmu.a.p/excp_helper.c.o\n") == (391, 1732)
    assert qb.ninja_progress(b"ninja: Entering directory `build'\n") is None


# -- the facts and the report ------------------------------------------------------------------

def test_the_host_facts_carry_the_l0_and_the_report_shows_it():
    f = HostFacts("p", "ppc64le", "POWER10", "hv-nested-papr", l0_qemu="QEMU emulator version 10.0.2, built by caskit",
                  l0_patches=(MER_ID,))
    back = HostFacts.from_dict(json.loads(json.dumps(f.to_dict())))
    assert back == f and back.l0_patches == (MER_ID,)
    assert HostFacts.from_dict({k: v for k, v in f.to_dict().items() if not k.startswith("l0_")}).l0_patches == ()
    needs = host_needs(f.to_dict())
    assert f"L0 QEMU patched by caskit ({MER_ID}): QEMU emulator version 10.0.2, built by caskit" in needs
    assert "L0" not in host_needs(HostFacts("h", "ppc64le", "POWER9", "hv").to_dict())


def test_the_l0_moves_the_facts_digest_and_a_host_without_one_keeps_its_old_digest():
    plain = HostFacts("h", "ppc64le", "POWER9", "hv")
    assert facts_digest(plain) == digest({k: getattr(plain, k) for k in FACT_FIELDS})  # records stay resumable
    patched = HostFacts("h", "ppc64le", "POWER9", "hv", l0_qemu="x", l0_patches=(MER_ID,))
    assert facts_digest(patched) != facts_digest(plain)
    assert facts_digest(patched) != facts_digest(HostFacts("h", "ppc64le", "POWER9", "hv", l0_qemu="y",
                                                           l0_patches=(MER_ID,)))


def test_an_emulated_hosts_state_gives_its_l0_facts(tmp_path, monkeypatch):
    from harness import connect
    from harness.specs import HostSpec

    monkeypatch.setattr(emulated, "hosts_dir", lambda: tmp_path)
    (tmp_path / "p").mkdir()
    spec = HostSpec("p", "emulated", 1, (), None, emulated_kind="nested-papr")
    assert connect.l0_facts(spec) == {}  # never booted
    st = emulated.L1State("p", "nested-papr", "up", 1, 2, "t", "img", str(tmp_path / "p"), 0.0,
                          l0_qemu="QEMU 10.0.2 by caskit", l0_patches=[MER_ID])
    st.save()
    assert connect.l0_facts(spec) == {"l0_qemu": "QEMU 10.0.2 by caskit", "l0_patches": (MER_ID,)}
    assert connect.l0_facts(HostSpec("q", "ssh", 1, (), "x")) == {}
    # A state file from before the L0 was recorded still loads.
    raw = json.loads(emulated.L1State.path("p").read_text())
    for k in ("l0_qemu", "l0_patches"):
        raw.pop(k)
    emulated.L1State.path("p").write_text(json.dumps(raw))
    assert connect.l0_facts(spec) == {"l0_qemu": None, "l0_patches": ()}


# -- the stock L0's known issue ----------------------------------------------------------------

HANG = {"error": "the guest hung after it was ready", "stage": "guest", "error_kind": "GuestHang", "infra": False,
        "host_findings": [{"kind": "undelivered-mer", "line": "the L0's vCPU 1 ran ..."}]}


def test_the_stock_l0s_known_issue_never_turns_a_hang_on_the_patched_l0_green():
    issues = known_issues.load()
    (k,) = [k for k in issues if k.id == "nested-papr-tcg-l0-drops-mer"]
    assert k.l0_without == (MER_ID,) and "stock" in k.summary

    def explain(l0_patches=()):
        return known_issues.explain_boot(issues, accel="kvm", smp=1, kvm_mode="hv-nested-papr", build_version="7.2.11",
                                         observed=HANG, l0_patches=l0_patches)
    assert explain()[0] is k  # a stock L0 (an inventory's own): still the known issue
    found, why = explain((MER_ID,))
    assert found is None and why == f"{k.id} is about a stock L0, and this host's L0 carries caskit's patch {MER_ID}"
    assert explain(("some-other-patch",))[0] is k


def _load(tmp_path: Path, match: str):
    f = tmp_path / "k.yaml"
    f.write_text("issues:\n  - id: x\n    summary: s\n    reference: r\n    match:\n" + match)
    return known_issues.load(f)


def test_l0_without_names_a_shipped_patch_of_a_boot_entry(tmp_path):
    boot = ("      kvm_modes: [hv-nested-papr]\n      error_kinds: [GuestHang]\n"
            "      host_findings: [undelivered-mer]\n")
    assert _load(tmp_path, boot + f"      l0_without: [{MER_ID}]\n")[0].l0_without == (MER_ID,)
    with pytest.raises(ConfigError, match=r"match.l0_without\[0\]: 'typo' is not allowed; allowed: .*" + MER_ID):
        _load(tmp_path, boot + "      l0_without: [typo]\n")
    with pytest.raises(ConfigError, match="l0_without are for boot entries"):
        _load(tmp_path, f"      symptoms: [no-heartbeat]\n      l0_without: [{MER_ID}]\n")


def test_a_source_file_is_fetched_by_apt_checked_and_kept(tmp_path):
    import hashlib

    mirror = tmp_path / "mirror" / "qemu_1.0.orig.tar.xz"
    mirror.parent.mkdir()
    mirror.write_bytes(b"upstream source\n")
    good = SourceFile(f"file://{mirror}", mirror.name, mirror.stat().st_size, hashlib.sha256(mirror.read_bytes()).hexdigest())
    apt = PrivateApt(tmp_path / "src", "amd64", ["bookworm-backports"], sources=True)
    got = apt.download_file(good)
    assert got == tmp_path / "src" / "sources" / mirror.name and not got.is_symlink()
    assert got.read_bytes() == b"upstream source\n"
    mirror.write_bytes(b"changed upstream\n")  # kept: not fetched again
    assert apt.download_file(good).read_bytes() == b"upstream source\n"
    with pytest.raises(KitError, match="apt-helper download-file"):
        apt.download_file(SourceFile(good.uri, "other.tar.xz", good.size, "ab" * 32))
    assert not (tmp_path / "src" / "sources" / "other.tar.xz").exists()
