"""PrivateApt.query: a read-only apt answer is kept, keyed by the index on disk and the options,
and asked again as soon as the index changes (an update rewrites its lists)."""

from __future__ import annotations

import os

from harness.debfetch import PrivateApt


class CountingApt(PrivateApt):
    def __init__(self, root):
        super().__init__(root, "ppc64el", ["bookworm"])
        self.calls: list[list[str]] = []

    def _run(self, argv, cwd=None):
        self.calls.append(argv)
        return f"answer {len(self.calls)} to {' '.join(argv)}\n"


def test_an_answer_is_asked_once_per_index(tmp_path):
    lists = tmp_path / "state" / "lists"
    lists.mkdir(parents=True)
    (lists / "deb.debian.org_dists_bookworm_main_binary-ppc64el_Packages").write_text("Package: a\n")
    apt = CountingApt(tmp_path)
    q = ["apt-cache", "show", "--no-all-versions", "busybox-static"]
    first = apt.query(q)
    assert apt.query(q) == first and len(apt.calls) == 1
    assert CountingApt(tmp_path).query(q) == first  # another process finds it too
    other = apt.query(q[:-1] + ["linux-image-powerpc64le"])  # another question: asked
    assert other != first and len(apt.calls) == 2
    # An update that changed the index: asked again.
    p = lists / "deb.debian.org_dists_bookworm_main_binary-ppc64el_Packages"
    p.write_text("Package: a\nVersion: 2\n")
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 1_000_000))
    assert apt.query(q) != first and len(apt.calls) == 3


def test_a_failed_query_is_not_kept(tmp_path):
    (tmp_path / "state" / "lists").mkdir(parents=True)

    class Failing(CountingApt):
        def _run(self, argv, cwd=None):
            self.calls.append(argv)
            raise RuntimeError("apt-cache failed")

    apt = Failing(tmp_path)
    for _ in range(2):
        try:
            apt.query(["apt-cache", "show", "x"])
        except RuntimeError:
            pass
    assert len(apt.calls) == 2 and not list((tmp_path / "answers").glob("*"))
