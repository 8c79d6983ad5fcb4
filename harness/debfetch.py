"""Fetch Debian packages of a foreign architecture without touching the host's dpkg.

apt runs with its own state, cache and sources list under caskit's cache directory; the mirrors
are the ones this host's apt already uses (read from its sources), so a farm's local mirror is
honoured and nothing here names a mirror of its own.
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

from .errors import KitError

APT_SOURCES = [Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d")]
# How old a private package index may get before caskit asks the archive again. Cache keys hold
# the versions the index resolves, so this bounds how long an archive update can go unnoticed
# (the kernel update of issue 20 hid for weeks behind a cache keyed by package names).
INDEX_MAX_AGE_S = 24 * 3600


@dataclass(frozen=True)
class Resolved:
    """One package as the index resolves it: the exact .deb a build would use."""

    name: str
    version: str
    sha256: str
    depends: str = ""

    def pin(self) -> str:
        return f"{self.name}={self.version}"


@dataclass(frozen=True)
class Source:
    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str | None = None


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas, cur, last = [], {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, last = {}, None
        elif line[0] in " \t" and last:
            cur[last] += "\n" + line.strip()
        elif ":" in line:
            k, v = line.split(":", 1)
            last = k.strip().lower()
            cur[last] = v.strip()
    if cur:
        stanzas.append(cur)
    return stanzas


def host_sources(paths: list[Path] = APT_SOURCES) -> list[Source]:
    """The host's enabled `deb` sources, from one-line and deb822 files."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(x for x in p.iterdir() if x.suffix in (".list", ".sources"))
        elif p.is_file():
            files.append(p)
    out: list[Source] = []
    for f in files:
        text = f.read_text(errors="replace")
        if f.suffix == ".sources":
            for s in _deb822_stanzas(text):
                if "deb" not in s.get("types", "").split() or s.get("enabled", "yes").lower() == "no":
                    continue
                for uri in s.get("uris", "").split():
                    for suite in s.get("suites", "").split():
                        out.append(Source(uri, suite, tuple(s.get("components", "main").split()), s.get("signed-by")))
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
                if m:
                    opts = m.group(1) or ""
                    sb = re.search(r"signed-by=(\S+?)[\s\]]", opts + " ")
                    out.append(Source(m.group(2), m.group(3), tuple(m.group(4).split() or ["main"]), sb.group(1) if sb else None))
    return out


def debian_codename() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "bookworm"


@dataclass(frozen=True)
class SourceFile:
    """One file of a Debian source package as the signed Sources index lists it."""

    uri: str
    name: str
    size: int
    sha256: str


class PrivateApt:
    """apt-get and apt-cache confined to `root` for architecture `arch`. With `sources`, the
    state lists the suites' source packages (`deb-src`) instead of their binaries: a separate
    root, so a binary index never pays for the much larger Sources index."""

    def __init__(self, root: Path, arch: str, suites: list[str], default_release: str | None = None,
                 sources: bool = False):
        self.root, self.arch, self.suites = Path(root), arch, suites
        self.default_release = default_release  # prefer this suite's versions (e.g. backports)
        self.sources = sources
        self.warnings: list[str] = []

    def _line(self, uri: str, suite: str, components: tuple[str, ...] | list[str], signed_by: str | None) -> str:
        if self.sources:
            opts = f"signed-by={signed_by}" if signed_by else ""
            return f"deb-src {f'[{opts}] ' if opts else ''}{uri} {suite} {' '.join(components)}"
        opts = f"arch={self.arch}" + (f" signed-by={signed_by}" if signed_by else "")
        return f"deb [{opts}] {uri} {suite} {' '.join(components)}"

    def _sources_text(self) -> str:
        lines: list[str] = []
        listed: set[str] = set()
        sources = host_sources()
        for s in sources:
            if s.suite not in self.suites or not s.uri.startswith(("http://", "https://", "file:")):
                continue
            line = self._line(s.uri, s.suite, s.components, s.signed_by)
            if line not in lines:
                lines.append(line)
                listed.add(s.suite)
        # A suite the host does not list (e.g. backports) comes from the host's main archive.
        base = next((s for s in sources if s.suite == debian_codename()), None)
        for suite in self.suites:
            if suite not in listed and base is not None:
                lines.append(self._line(base.uri, suite, ["main"], base.signed_by))
        if not lines:
            raise KitError("no usable Debian source in /etc/apt: cannot fetch guest packages")
        return "\n".join(lines) + "\n"

    def _opts(self) -> list[str]:
        r = self.root
        return [
            "-o", f"Dir::State={r}/state",
            "-o", f"Dir::State::Lists={r}/state/lists",
            "-o", f"Dir::State::status={r}/state/status",
            "-o", f"Dir::Cache={r}/cache",
            "-o", f"Dir::Etc::SourceList={r}/sources.list",
            "-o", f"Dir::Etc::SourceParts={r}/sources.list.d",
            "-o", f"APT::Architecture={self.arch}",
            "-o", f"APT::Architectures::={self.arch}",
            "-o", "Debug::NoLocking=1",
            "-o", "Acquire::Languages=none",
            "-o", "Acquire::Retries=3",
            "-o", "Acquire::http::Timeout=30",
            "-q",
        ] + (["-o", f"APT::Default-Release={self.default_release}"] if self.default_release else [])

    def _run(self, argv: list[str], cwd: Path | None = None) -> str:
        p = subprocess.run(argv[:1] + self._opts() + argv[1:], cwd=cwd, capture_output=True, text=True)
        if p.returncode != 0:
            raise KitError(f"{' '.join(argv)} failed (exit {p.returncode}): {p.stderr.strip()[-1500:]}")
        return p.stdout

    def query(self, argv: list[str]) -> str:
        """A read-only apt query (apt-cache show, apt-get --print-uris): its answer is a function of
        the index on disk and the options, so it is kept under the private state, keyed by both,
        and asked again only when the index changed (an update rewrites its lists). Each apt-cache
        call costs about 0.8 s here (measured: the kit's three were 2.3 s of every `caskit run`)."""
        lists = sorted((p.name, st.st_size, st.st_mtime_ns) for p in (self.root / "state/lists").glob("*")
                       if p.is_file() and (st := p.stat()))
        key = hashlib.sha256(json.dumps([argv, self._opts(), lists]).encode()).hexdigest()[:24]
        memo = self.root / "answers" / f"{key}.txt"
        try:
            return memo.read_text()
        except OSError:
            pass
        out = self._run(argv)
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
        tmp.write_text(out)
        tmp.replace(memo)  # whole or absent: workers and farm jobs share it
        return out

    def update(self) -> None:
        for d in ("state/lists/partial", "cache/archives/partial", "sources.list.d", "debs"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "state/status").touch()
        (self.root / "sources.list").write_text(self._sources_text())
        try:
            self._run(["apt-get", "update"])
        except KitError as e:
            # A mirror mid-sync fails one suite's index now and then (seen: bookworm-security
            # "File has unexpected size"). apt keeps the indexes it did get; go on with those
            # if the base suite is among them, and say so.
            if not self.has_suite(self.suites[0]):
                raise
            self.warnings.append(f"apt-get update was partial, using the indexes it got: {e}")

    def ensure_index(self, max_age: float = INDEX_MAX_AGE_S, force: bool = False, log=print) -> None:
        """An index no older than `max_age`: refreshed when older (or `force`). Without network an
        index that exists is used as it is, and said so; without either, a KitError. Serialised
        by a lock: xdist workers and farm jobs share this state, and apt runs here unlocked."""
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = self.root / "state" / "updated"
        with open(self.root / ".index.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            age = time.time() - stamp.stat().st_mtime if stamp.is_file() and self.has_lists() else None
            if not force and age is not None and age < max_age:
                return
            log(f"apt: refreshing the {self.arch} package index of {', '.join(self.suites)} (private state in {self.root})")
            try:
                self.update()
            except KitError as e:
                if age is None and not self.has_lists():
                    raise
                lists = [p.stat().st_mtime for p in (self.root / "state/lists").glob("*Packages*")]
                when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(max(lists)))
                msg = f"could not refresh the package index, using the one from {when}: {e}"
                self.warnings.append(msg)
                log(f"apt: warning: {msg}")
                return
            stamp.touch()
            for w in self.warnings:
                log(f"apt: warning: {w}")

    def resolve(self, *pkgs: str) -> dict[str, Resolved]:
        """Each package's candidate (version, SHA-256 of its .deb, Depends), one apt-cache call."""
        text = self.query(["apt-cache", "show", "--no-all-versions", *pkgs])
        out: dict[str, Resolved] = {}
        for st in _deb822_stanzas(text):
            name = st.get("package")
            if name in pkgs and name not in out and st.get("version"):
                out[name] = Resolved(name, st["version"], st.get("sha256", ""), st.get("depends", ""))
        missing = [p for p in pkgs if p not in out]
        if missing:
            raise KitError(f"the {self.arch} package index has no {', '.join(missing)}")
        return out

    @property
    def _index(self) -> str:
        return "Sources" if self.sources else "Packages"

    def has_lists(self) -> bool:
        return any((self.root / "state/lists").glob(f"*{self._index}*"))

    def has_suite(self, suite: str) -> bool:
        return any((self.root / "state/lists").glob(f"*_dists_{suite}_*{self._index}*"))

    def source_files(self, pkg: str, version: str) -> list[SourceFile]:
        """The files of source package `pkg` at `version` (a `sources` state), with the URI,
        size and SHA-256 the signed index gives (apt-get source --print-uris: nothing fetched)."""
        text = self.query(["apt-get", "source", "--print-uris", "--only-source", f"{pkg}={version}"])
        out = parse_source_uris(text)
        if not out:
            raise KitError(f"the source index of {', '.join(self.suites)} lists no files of {pkg} {version}")
        return out

    def download_file(self, f: SourceFile) -> Path:
        """One file of a source package, fetched once into the private cache by apt's own
        downloader, which checks it against the index's SHA-256 (and it is checked again here)."""
        dest = self.root / "sources" / f.name
        if dest.is_file() and dest.stat().st_size == f.size and sha256_file(dest) == f.sha256:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{f.name}.part")
        part.unlink(missing_ok=True)
        self._run(["/usr/lib/apt/apt-helper", "download-file", f.uri, str(part), f"SHA256:{f.sha256}"])
        if part.is_symlink():  # a file: mirror is linked, not copied: keep a copy of our own
            target = part.resolve()
            part.unlink()
            shutil.copyfile(target, part)
        if not part.is_file() or sha256_file(part) != f.sha256:
            raise KitError(f"{f.uri}: the download's SHA-256 is not the index's {f.sha256}")
        part.replace(dest)
        return dest

    def download(self, pkg: str, version: str) -> Path:
        """The .deb of `version` (as resolve() gave it), downloaded once into the private cache."""
        fname_ver = version.replace(":", "%3a")
        debs = self.root / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        found = sorted(debs.glob(f"{pkg}_{fname_ver}_*.deb"))
        if not found:
            self._run(["apt-get", "download", f"{pkg}={version}"], cwd=debs)
            found = sorted(debs.glob(f"{pkg}_{fname_ver}_*.deb"))
        if not found:
            raise KitError(f"apt-get download {pkg}={version} left no {pkg}_{fname_ver}_*.deb in {debs}")
        return found[0]


def parse_source_uris(text: str) -> list[SourceFile]:
    """`apt-get source --print-uris` lines: 'URI' NAME SIZE SHA256:HEX (pure; other hash kinds
    and apt's prose are skipped)."""
    out = []
    for m in re.finditer(r"^'(\S+)' (\S+) (\d+) SHA256:([0-9a-f]{64})\s*$", text, re.M):
        out.append(SourceFile(m.group(1), m.group(2), int(m.group(3)), m.group(4)))
    return out


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unpacked_once(deb: Path, under: Path) -> Path:
    """The deb's files under `under`, unpacked once per .deb file name (which carries the
    version): the guest kit and the L1 images share this cache."""
    dest = under / deb.stem
    if not (dest / ".complete").exists():
        shutil.rmtree(dest, ignore_errors=True)
        unpack(deb, dest)
        (dest / ".complete").touch()
    return dest


def unpack(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["dpkg", "-x", str(deb), str(dest)], capture_output=True, text=True)
    if p.returncode != 0:
        raise KitError(f"dpkg -x {deb} failed: {p.stderr.strip()}")


def host_arch() -> str:
    p = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True)
    return p.stdout.strip() or "amd64"
