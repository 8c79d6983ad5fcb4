"""L1 kernels caskit builds itself, where no Debian kernel has what a KVM mode needs.

PR KVM (`kvm_pr`) is such a mode: Debian builds neither `CONFIG_KVM_BOOK3S_64_PR` nor the core
kernel hooks it needs, so a module alone will not do. The kernel is built from Debian's own
`linux-source` package (fetched with the guest kit's private apt state, never the host's dpkg)
with bootstrap's cross compiler: `allnoconfig` plus a fragment under l1/kernels/, everything
built in. The build takes minutes (docs/pr-kvm.md measures it), so it is cached by content: the
source .deb's SHA-256, the fragment, the cross compiler's version and this recipe's version.
A fragment line that did not survive Kconfig (a dependency missing, a symbol renamed in a newer
source) stops the build by name before anything is cached.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..debfetch import PrivateApt, Resolved, sha256_file, unpacked_once
from ..errors import KitError
from ..kit import cache_root
from .build_steps import run_logged, run_with_progress
from ..resources import ROOT

RECIPE_VERSION = 1
SOURCE_META = "linux-source"  # depends on the suite's linux-source-X.Y
ARCH = "powerpc"
CROSS = "powerpc64le-linux-gnu-"
KERNELS_DIR = ROOT / "l1" / "kernels"
# What the build needs on this machine besides the cross compiler: (program or header, package).
HOST_TOOLS = (("make", "make"), ("flex", "flex"), ("bison", "bison"), ("bc", "bc"),
              ("/usr/include/gelf.h", "libelf-dev"), ("/usr/include/openssl/ssl.h", "libssl-dev"),
              (f"{CROSS}gcc", "gcc-powerpc64le-linux-gnu"))


@dataclass(frozen=True)
class BuiltKernel:
    name: str  # the recipe's name: l1/kernels/<name>.config
    key: str
    vmlinux: Path
    release: str
    manifest: dict


def kernels_dir() -> Path:
    return cache_root() / "l1" / "kernels"


def fragment(name: str) -> bytes:
    f = KERNELS_DIR / f"{name}.config"
    try:
        return f.read_bytes()
    except OSError as e:
        raise KitError(f"no kernel recipe {name!r}: {f}: {e.strerror or e}") from None


def wanted_options(frag: bytes) -> dict[str, str]:
    """CONFIG_X -> value of every line the fragment sets (pure); comments are skipped."""
    out = {}
    for line in frag.decode().splitlines():
        if m := re.fullmatch(r"(CONFIG_\w+)=(.*)", line.strip()):
            out[m.group(1)] = m.group(2)
    return out


def lost_options(frag: bytes, config: str) -> list[str]:
    """The fragment's settings the resulting .config does not have (pure), as 'CONFIG_X=y (got
    ...)'. Kconfig drops a setting silently when its dependencies are off."""
    have = {}
    for line in config.splitlines():
        if m := re.fullmatch(r"(CONFIG_\w+)=(.*)", line):
            have[m.group(1)] = m.group(2)
        elif m := re.fullmatch(r"# (CONFIG_\w+) is not set", line):
            have[m.group(1)] = "n"
    return [f"{k}={v} (the .config has {have.get(k, 'nothing')})" for k, v in wanted_options(frag).items()
            if have.get(k, "n") != v]


def cross_compiler_version() -> str:
    try:
        p = subprocess.run([f"{CROSS}gcc", "--version"], capture_output=True, text=True)
    except OSError:
        raise KitError(f"{CROSS}gcc is not installed (Debian package gcc-powerpc64le-linux-gnu; "
                       "scripts/bootstrap.sh installs it)") from None
    return (p.stdout.splitlines() or ["?"])[0].strip()


def missing_tools() -> list[str]:
    """Debian packages the build needs that this machine lacks."""
    return [pkg for what, pkg in HOST_TOOLS if not (Path(what).exists() if what.startswith("/") else shutil.which(what))]


def source_package(apt: PrivateApt) -> Resolved:
    """The suite's linux-source-X.Y, through its meta package."""
    meta = apt.resolve(SOURCE_META)[SOURCE_META]
    src = next((d.split()[0] for d in meta.depends.split(",") if d.strip().startswith("linux-source-")), None)
    if not src:
        raise KitError(f"{SOURCE_META} {meta.version} depends on no linux-source-X.Y package: {meta.depends!r}")
    return apt.resolve(src)[src]


def recipe_key(name: str, src: Resolved, frag: bytes, cc: str) -> str:
    """The build's cache key (pure)."""
    return hashlib.sha256(json.dumps({
        "recipe": RECIPE_VERSION, "name": name, "source": [src.name, src.version, src.sha256],
        "fragment": hashlib.sha256(frag).hexdigest(), "cc": cc, "arch": ARCH,
    }, sort_keys=True).encode()).hexdigest()[:16]


def current_key(apt: PrivateApt, name: str) -> str:
    """The key `build()` would return now, without building (an image's own key covers it)."""
    return recipe_key(name, source_package(apt), fragment(name), cross_compiler_version())


def load_cached(key: str) -> BuiltKernel | None:
    d = kernels_dir() / key
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    vmlinux = d / "vmlinux"
    if not vmlinux.is_file():
        return None
    return BuiltKernel(manifest["name"], key, vmlinux, manifest["release"], manifest)


def build(apt: PrivateApt, name: str, log=print, jobs: int | None = None) -> BuiltKernel:
    """The kernel of recipe `name`, built once per key (other processes wait on the lock)."""
    apt.ensure_index(log=log)
    src, frag, cc = source_package(apt), fragment(name), cross_compiler_version()
    key = recipe_key(name, src, frag, cc)
    if (k := load_cached(key)) is not None:
        return k
    kernels_dir().mkdir(parents=True, exist_ok=True)
    with open(kernels_dir() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (k := load_cached(key)) is not None:  # another process built it while this one waited
            return k
        return _build_locked(apt, name, key, src, frag, cc, log, jobs or os.cpu_count() or 1)


def _build_locked(apt: PrivateApt, name: str, key: str, src: Resolved, frag: bytes, cc: str, log,
                  jobs: int) -> BuiltKernel:
    if missing := missing_tools():
        raise KitError(f"building the {name} L1 kernel needs the Debian packages {', '.join(missing)} "
                       "(scripts/bootstrap.sh installs them)")
    t0 = time.monotonic()
    deb = apt.download(src.name, src.version)
    if src.sha256 and sha256_file(deb) != src.sha256:
        raise KitError(f"{deb}: SHA-256 is not the index's {src.sha256} (a partial or stale download?)")
    unpacked = unpacked_once(deb, cache_root() / "unpacked")
    tars = sorted((unpacked / "usr" / "src").glob("linux-source-*.tar.*"))
    if not tars:
        raise KitError(f"{src.name} {src.version}: no usr/src/linux-source-*.tar.* in the package")
    work = kernels_dir() / f"{key}.build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log(f"kernel {name}: unpacking {tars[0].name} ({src.name} {src.version})")
    run_logged(["tar", "-xf", str(tars[0]), "-C", str(work)], work / "tar.log", f"unpacking {tars[0].name}")
    tree = next((p for p in work.iterdir() if p.is_dir()), None)
    if tree is None:
        raise KitError(f"{tars[0]}: unpacked to nothing")
    (work / "fragment.config").write_bytes(frag)
    out = work / "out"
    make = ["make", "-C", str(tree), f"O={out}", f"ARCH={ARCH}", f"CROSS_COMPILE={CROSS}"]
    run_logged(make + [f"KCONFIG_ALLCONFIG={work / 'fragment.config'}", "allnoconfig"], work / "config.log",
         "make allnoconfig")
    config = (out / ".config").read_text()
    if lost := lost_options(frag, config):
        raise KitError(f"kernel {name}: l1/kernels/{name}.config asks for what Kconfig did not keep in "
                       f"{src.name} {src.version}: {'; '.join(lost)}")
    log(f"kernel {name}: compiling vmlinux with {jobs} jobs (minutes: see docs/pr-kvm.md); log in {work / 'build.log'}")
    t_make = time.monotonic()
    _make_with_progress(make + [f"-j{jobs}", "vmlinux"], work / "build.log", name, log)
    release = subprocess.run(make + ["-s", "kernelrelease"], capture_output=True, text=True).stdout.strip()
    build_s = time.monotonic() - t_make

    final = kernels_dir() / key
    tmp = kernels_dir() / f"{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.copyfile(out / "vmlinux", tmp / "vmlinux")
    shutil.copyfile(out / ".config", tmp / "config")
    shutil.copyfile(work / "build.log", tmp / "build.log")
    manifest = {
        "name": name, "key": key, "release": release, "recipe": RECIPE_VERSION,
        "source": {"package": src.name, "version": src.version, "sha256": src.sha256},
        "fragment_sha256": hashlib.sha256(frag).hexdigest(), "cross_compiler": cc, "jobs": jobs,
        "compile_s": round(build_s, 1), "total_s": round(time.monotonic() - t0, 1),
        "vmlinux_bytes": (out / "vmlinux").stat().st_size,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    shutil.rmtree(work, ignore_errors=True)  # about 1.5 GB of source and objects
    log(f"kernel {name}: built {release} ({manifest['vmlinux_bytes'] / 1e6:.1f} MB vmlinux) in "
        f"{manifest['total_s']:.0f} s, compiling {build_s:.0f} s with {jobs} jobs")
    k = load_cached(key)
    assert k is not None
    return k


def _make_with_progress(argv: list[str], log_file: Path, name: str, log) -> None:
    """make, with a progress line of the objects compiled so far (kbuild prints one `CC` line
    per object)."""
    compiled = [0]

    def seen(line: bytes) -> None:
        if line.lstrip().startswith(b"CC "):
            compiled[0] += 1

    run_with_progress(argv, log_file, f"building the {name} kernel", log, seen,
                      lambda s: f"kernel {name}: {compiled[0]} objects compiled, {s:.0f} s")
