"""L0 QEMU builds caskit makes itself, where no Debian QEMU does what an emulated host needs.

The nested-papr hosts need one: QEMU's TCG never delivers the Mediated External interrupt that
LPCR[MER] requests, and a Linux 6.8+ L1 on the nested API v2 hands every external interrupt of
its L2s to the L0 that way, so without the patch an L2 there gets none (docs/hosts.md, "The
patched L0"). A recipe is the upstream source behind a Debian suite's QEMU (its `.orig` tarball,
fetched with a private `deb-src` apt state, never the host's dpkg, and checked against the
signed index's SHA-256), caskit's patches from patches/qemu/, and a configure line that builds
qemu-system-ppc64 alone. Firmware (VOF, SLOF) still comes from the suite's binary package
(`-L`), which qemu_builds.suite_build() unpacks.

The build takes minutes (docs/hosts.md measures it), so it is cached by content: the tarball's
SHA-256, each patch's, the configure arguments and this recipe's version. What the build needs
on this machine (compiler, ninja, the -dev packages, meson >= 1.5 in caskit's own Python) is
checked first and named when missing (MissingTools: exit 2 at the command line);
scripts/bootstrap.sh installs all of it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..debfetch import PrivateApt, SourceFile, debian_codename, host_arch
from ..errors import KitError, MissingTools
from ..kit import cache_root
from .build_steps import run_logged, run_with_progress
from ..resources import QEMU_PATCHES as PATCHES_DIR, qemu_patch_id as patch_id

RECIPE_VERSION = 1
TARGET = "qemu-system-ppc64"
MESON_MIN = (1, 5)  # QEMU 10.0's pythondeps.toml; bookworm's meson is 1.0.1
# What else configure's mkvenv insists on (pythondeps.toml's testdeps, checked offline all the same).
PYTHON_DEPS = ("pycotap",)
# Only the ppc64 system emulator, no docs, tools or firmware blobs (the +ds tarball has none:
# meson stops on "File bios.bin does not exist" without --disable-install-blobs), nothing that
# would download, and no UI: an L0 runs with -display none and a console socket.
CONFIGURE_ARGS = ("--target-list=ppc64-softmmu", "--disable-docs", "--disable-tools", "--disable-guest-agent",
                  "--disable-download", "--disable-install-blobs", "--enable-slirp", "--enable-fdt=system",
                  "--disable-gtk", "--disable-sdl", "--disable-opengl", "--disable-spice", "--disable-curses",
                  "--disable-xkbcommon", "--disable-capstone", "--disable-vnc-jpeg", "--disable-png")
# What the build needs on this machine: (program, or a header path, and its Debian package).
HOST_TOOLS = (("cc", "gcc"), ("ninja", "ninja-build"), ("pkg-config", "pkg-config"), ("flex", "flex"),
              ("bison", "bison"), ("patch", "patch"), ("xz", "xz-utils"),
              ("/usr/include/glib-2.0/glib.h", "libglib2.0-dev"), ("/usr/include/slirp/libslirp.h", "libslirp-dev"),
              ("/usr/include/libfdt.h", "libfdt-dev"), ("/usr/include/pixman-1/pixman.h", "libpixman-1-dev"),
              ("/usr/include/zlib.h", "zlib1g-dev"))
_NINJA_STEP = re.compile(rb"^\[(\d+)/(\d+)\] ")


@dataclass(frozen=True)
class Recipe:
    """One L0 build: the upstream source of `suite`'s QEMU, with caskit's `patches` on it."""

    name: str
    suite: str  # the Debian suite whose QEMU (source and firmware) the build starts from
    patches: tuple[str, ...]  # file names under patches/qemu/, applied in this order
    # Bytes the built binary must contain: proof the patched code was compiled in.
    marker: bytes
    why: str  # one line for the host's facts and the report


RECIPES = {
    "mer": Recipe("mer", "bookworm-backports",
                  ("0001-target-ppc-Deliver-the-Mediated-External-interrupt-r.patch",
                   # Without these two a migration inside the L1 corrupts the L2: TCG let a store
                   # through after a load without setting C, so the L1's dirty log missed pages,
                   # and the L1's TLB invalidations never reached the L0 (docs/hosts.md).
                   "0002-target-ppc-Radix-no-store-permission-in-the-TLB-unti.patch",
                   "0003-ppc-spapr-nested-H_TLB_INVALIDATE-flushes-every-vCPU.patch"),
                  marker=b"MEXT",  # powerpc_excp_name() of the new exception
                  why="TCG delivers the Mediated External interrupt LPCR[MER] requests (nested API v2 L2s "
                      "get their external interrupts), sets C before a store after a load and flushes every "
                      "vCPU's TLB on H_TLB_INVALIDATE (a migration inside the L1 keeps the L2 intact)"),
}


@dataclass(frozen=True)
class BuiltQemu:
    recipe: str
    key: str
    binary: Path
    version: str  # `-version`'s first line
    manifest: dict

    @property
    def patch_ids(self) -> tuple[str, ...]:
        return tuple(p["id"] for p in self.manifest.get("patches", ()))

    def describe(self) -> str:
        """One line for facts and reports: what runs as the L0, and why it is caskit's."""
        src = self.manifest.get("source", {})
        patches = ", ".join(f"patches/qemu/{p['file']} (sha256 {p['sha256'][:12]})"
                            for p in self.manifest.get("patches", ()))
        return (f"{self.version}, built by caskit (recipe {self.recipe}, key {self.key}) from the upstream source of "
                f"Debian's qemu {src.get('version', '?')} with {patches}: "
                f"{RECIPES[self.recipe].why if self.recipe in RECIPES else '?'}")


def builds_dir() -> Path:
    return cache_root() / "qemu" / "builds"


def recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KitError(f"no QEMU build recipe {name!r}; recipes: {', '.join(RECIPES)}") from None


def patch_bytes(r: Recipe) -> list[tuple[str, bytes]]:
    out = []
    for name in r.patches:
        f = PATCHES_DIR / name
        try:
            out.append((name, f.read_bytes()))
        except OSError as e:
            raise KitError(f"QEMU recipe {r.name}: no patch {f}: {e.strerror or e}") from None
    return out


def recipe_key(r: Recipe, tarball: SourceFile, patches: list[tuple[str, bytes]]) -> str:
    """The build's cache key (pure)."""
    return hashlib.sha256(json.dumps({
        "recipe": RECIPE_VERSION, "name": r.name, "source": [tarball.name, tarball.sha256],
        "patches": [[n, hashlib.sha256(b).hexdigest()] for n, b in patches], "configure": list(CONFIGURE_ARGS),
        "target": TARGET,
    }, sort_keys=True).encode()).hexdigest()[:16]


def meson_version() -> tuple[int, ...] | None:
    """meson's version in caskit's own Python (configure runs QEMU's mkvenv from it)."""
    try:
        return tuple(int(x) for x in re.findall(r"\d+", metadata.version("meson"))[:3])
    except metadata.PackageNotFoundError:
        return None


def missing_tools() -> list[str]:
    """What the build needs that this machine lacks: Debian packages, and meson from PyPI."""
    out = [pkg for what, pkg in HOST_TOOLS if not (Path(what).exists() if what.startswith("/") else shutil.which(what))]
    mv = meson_version()
    if mv is None or mv < MESON_MIN:
        out.append(f"meson >= {'.'.join(map(str, MESON_MIN))} in {sys.prefix} (pip install 'caskit[l0]'; "
                   f"{'found ' + '.'.join(map(str, mv)) if mv else 'none found'})")
    for dep in PYTHON_DEPS:
        try:
            metadata.version(dep)
        except metadata.PackageNotFoundError:
            out.append(f"{dep} in {sys.prefix} (pip install 'caskit[l0]')")
    return out


def _apts(suite: str) -> tuple[PrivateApt, PrivateApt]:
    """The suite's binary index (the version to build) and its source index (the tarball)."""
    codename = debian_codename()
    suites = [codename, f"{codename}-updates", f"{codename}-security", suite]
    return (PrivateApt(cache_root() / "apt" / f"{host_arch()}-{suite}", host_arch(), suites, default_release=suite),
            PrivateApt(cache_root() / "apt" / f"src-{suite}", host_arch(), [suite], sources=True))


def source_tarball(r: Recipe, log=print) -> tuple[str, SourceFile]:
    """(Debian version, upstream tarball) of the QEMU the recipe's suite ships today: the
    source of the very version of qemu-system-ppc the suite resolves (its firmware is used)."""
    binaries, sources = _apts(r.suite)
    binaries.ensure_index(log=log)
    version = binaries.resolve("qemu-system-ppc")["qemu-system-ppc"].version
    sources.ensure_index(log=log)
    files = sources.source_files("qemu", version)
    orig = [f for f in files if re.fullmatch(r"qemu_[^_]+\.orig\.tar\.(xz|gz|bz2)", f.name)]
    if not orig:
        raise KitError(f"the {r.suite} source index has no upstream tarball of qemu {version}: "
                       f"{', '.join(f.name for f in files)}")
    return version, orig[0]


def current_key(name: str, log=print) -> str:
    """The key `build()` would use now, without building."""
    r = recipe(name)
    _, tarball = source_tarball(r, log)
    return recipe_key(r, tarball, patch_bytes(r))


def load_cached(key: str) -> BuiltQemu | None:
    d = builds_dir() / key
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    binary = d / TARGET
    if not binary.is_file():
        return None
    return BuiltQemu(manifest["recipe"], key, binary, manifest["version"], manifest)


def build(name: str, log=print, jobs: int | None = None) -> BuiltQemu:
    """The L0 QEMU of recipe `name`, built once per key (other processes wait on the lock)."""
    r = recipe(name)
    deb_version, tarball = source_tarball(r, log)
    patches = patch_bytes(r)
    key = recipe_key(r, tarball, patches)
    if (b := load_cached(key)) is not None:
        return b
    builds_dir().mkdir(parents=True, exist_ok=True)
    with open(builds_dir() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (b := load_cached(key)) is not None:  # another process built it while this one waited
            return b
        return _build_locked(r, key, deb_version, tarball, patches, log, jobs or os.cpu_count() or 1)


def _build_locked(r: Recipe, key: str, deb_version: str, tarball: SourceFile, patches: list[tuple[str, bytes]],
                  log, jobs: int) -> BuiltQemu:
    if missing := missing_tools():
        raise MissingTools(f"building the {r.name} L0 QEMU needs {', '.join(missing)} (scripts/bootstrap.sh "
                           "installs them)")
    t0 = time.monotonic()
    _, sources = _apts(r.suite)
    log(f"qemu {r.name}: fetching {tarball.name} ({tarball.size / 1e6:.1f} MB, qemu {deb_version} from {r.suite})")
    tar = sources.download_file(tarball)
    work = builds_dir() / f"{key}.build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log(f"qemu {r.name}: unpacking {tar.name}")
    run_logged(["tar", "-xf", str(tar), "-C", str(work)], work / "tar.log", f"unpacking {tar.name}")
    tree = next((p for p in work.iterdir() if p.is_dir()), None)
    if tree is None:
        raise KitError(f"{tar}: unpacked to nothing")
    for name, body in patches:
        (work / name).write_bytes(body)
        run_logged(["patch", "-p1", "--batch", "--forward", "-d", str(tree), "-i", str(work / name)], work / "patch.log",
             f"applying patches/qemu/{name} to {tree.name}")
    out = tree / "build"
    out.mkdir()
    log(f"qemu {r.name}: configuring ({sys.executable}'s meson {'.'.join(map(str, meson_version() or ()))})")
    t_conf = time.monotonic()
    run_logged([str(tree / "configure"), f"--python={sys.executable}", *CONFIGURE_ARGS], work / "configure.log",
         "QEMU's configure", cwd=out)
    configure_s = time.monotonic() - t_conf
    log(f"qemu {r.name}: compiling {TARGET} with {jobs} jobs (minutes: see docs/hosts.md); log in "
        f"{work / 'build.log'}")
    t_make = time.monotonic()
    _ninja_with_progress(["ninja", "-C", str(out), f"-j{jobs}", TARGET], work / "build.log", r.name, log)
    build_s = time.monotonic() - t_make
    built = out / TARGET
    if r.marker not in built.read_bytes():
        raise KitError(f"qemu {r.name}: the built {TARGET} lacks {r.marker!r}: the patches did not compile in")
    version = _version(built)

    final = builds_dir() / key
    tmp = builds_dir() / f"{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # Stripped: 17 MB instead of 74 (the debug info is the build tree's, removed below).
    if subprocess.run(["strip", "-o", str(tmp / TARGET), str(built)], capture_output=True).returncode != 0:
        shutil.copyfile(built, tmp / TARGET)
    os.chmod(tmp / TARGET, 0o755)
    for f in ("configure.log", "build.log"):
        shutil.copyfile(work / f, tmp / f)
    for name, body in patches:
        (tmp / name).write_bytes(body)
    manifest = {
        "recipe": r.name, "key": key, "version": version, "recipe_version": RECIPE_VERSION,
        "source": {"package": "qemu", "version": deb_version, "suite": r.suite, "tarball": tarball.name,
                   "sha256": tarball.sha256, "uri": tarball.uri},
        "patches": [{"file": n, "id": patch_id(n), "sha256": hashlib.sha256(b).hexdigest()} for n, b in patches],
        "configure": list(CONFIGURE_ARGS), "python": sys.executable,
        "meson": ".".join(map(str, meson_version() or ())), "jobs": jobs,
        "configure_s": round(configure_s, 1), "compile_s": round(build_s, 1),
        "total_s": round(time.monotonic() - t0, 1), "binary_bytes": (tmp / TARGET).stat().st_size,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    shutil.rmtree(work, ignore_errors=True)  # about 1 GB of source and objects
    log(f"qemu {r.name}: built {version} ({manifest['binary_bytes'] / 1e6:.1f} MB) in {manifest['total_s']:.0f} s: "
        f"configure {configure_s:.0f} s, compiling {build_s:.0f} s with {jobs} jobs")
    b = load_cached(key)
    assert b is not None
    return b


def _version(binary: Path) -> str:
    p = subprocess.run([str(binary), "-version"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    line = (p.stdout.splitlines() or [""])[0].strip()
    if p.returncode != 0 or not line:
        raise KitError(f"the built {binary} does not run: exit {p.returncode}: {p.stderr.strip()[-500:]}")
    return line


def ninja_progress(line: bytes) -> tuple[int, int] | None:
    """(step, steps) of one line of ninja's output, which starts `[k/N] ` when not on a terminal (pure)."""
    m = _NINJA_STEP.match(line)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _ninja_with_progress(argv: list[str], log_file: Path, name: str, log) -> None:
    """ninja, with a progress line of its own step count."""
    step: list[tuple[int, int]] = []

    def seen(line: bytes) -> None:
        if (x := ninja_progress(line)) is not None:
            step[:] = [x]

    run_with_progress(argv, log_file, f"building the {name} L0 QEMU", log, seen,
                      lambda s: f"qemu {name}: {f'{step[0][0]}/{step[0][1]} steps' if step else 'starting'}, {s:.0f} s")
