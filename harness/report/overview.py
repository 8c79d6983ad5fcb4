"""The run's overview in report.html: a summary per host, and the filters over the matrix.

Each cell in the page carries one data attribute per filter (`filter_attrs`); the page's script
shows a cell when it matches every chosen value. Pure.
"""

from __future__ import annotations

# (data key, label): what a reader narrows the matrix by; "kvm" is the KVM mode a cell ran in.
FILTERS = (("host", "host"), ("kvm", "KVM mode"), ("ic_mode", "ic-mode"), ("kernel_irqchip", "kernel-irqchip"),
           ("cpu", "cpu"), ("cpu_compat", "max-cpu-compat"), ("guest_xive", "guest xive"), ("verdict", "verdict"))
VERDICTS = ("PASS", "FAIL", "XFAIL", "ERROR", "SKIP", "FLAKY")


def filter_attrs(c: dict, kvm: str) -> dict[str, str]:
    a = c.get("axes") or {}
    vals = {"host": c.get("host"), "kvm": kvm, "verdict": c.get("verdict")}
    return {k: str(vals[k] if k in vals else a.get(k, "")) for k, _ in FILTERS}


def filters(cells: list[dict], kvm_of) -> list[dict]:
    """Each filter with the values the run's cells have, in the order they first come."""
    attrs = [filter_attrs(c, kvm_of(c)) for c in cells]
    return [{"key": k, "label": label, "values": list(dict.fromkeys(a[k] for a in attrs))} for k, label in FILTERS]


def host_needs(facts: dict | None) -> str:
    """What every guest on a host got because of the host (pure): the -machine options its KVM
    forced (with QEMU's words) or the inventory set, the kernel command line the emulation needs,
    and the PAPR nested API its KVM uses."""
    f = facts or {}
    forced = {o: why for o, why in f.get("forced_options") or ()}
    parts = [f"-machine {o}" + (f" (QEMU under this KVM: {forced[o]!r})" if o in forced else " (inventory)")
             for o in f.get("guest_machine_options") or ()]
    if f.get("guest_append"):
        parts.append(f"guest command line {f['guest_append']} (the emulation starves vCPUs)")
    if f.get("nested_api"):
        parts.append(f"nested API {f['nested_api']}: {f.get('nested_api_evidence') or ''}".rstrip(": "))
    if f.get("l0_patches"):
        parts.append(f"L0 QEMU patched by caskit ({', '.join(f['l0_patches'])}): {f.get('l0_qemu') or ''}".rstrip(": "))
    if f.get("kvm_guest_refusal"):
        parts.append(f"QEMU still refused a guest under KVM: {f['kvm_guest_refusal']}")
    return "; ".join(parts)


def host_summary(cells: list[dict], kvm_of, hosts: dict | None = None) -> list[dict]:
    """Per host (and KVM mode): cells, verdict counts, the time its cells took, and what the
    host forced on its guests (`hosts`: run.json's probed facts by host name)."""
    out: dict[tuple[str, str], dict] = {}
    for c in cells:
        key = (str(c.get("ran_on") or c.get("host")), kvm_of(c))
        row = out.setdefault(key, {"host": key[0], "kvm": key[1], "cells": 0, "seconds": 0.0,
                                   "counts": {v: 0 for v in VERDICTS},
                                   "needs": host_needs((hosts or {}).get(key[0]))})
        row["cells"] += 1
        row["seconds"] += float(c.get("duration_s") or 0)
        v = c.get("verdict", "ERROR")
        row["counts"][v] = row["counts"].get(v, 0) + 1
    return list(out.values())


def pool_health(results: dict) -> list[dict]:
    """Each pool member's health check and how many cells it ran (run.json `pools`, `ran_on`)."""
    ran: dict[str, int] = {}
    for c in results.get("cells", []):
        if c.get("ran_on"):
            ran[c["ran_on"]] = ran.get(c["ran_on"], 0) + 1
    rows = []
    for pool, p in sorted((results.get("run", {}).get("pools") or {}).items()):
        for member, h in (p.get("members") or {}).items():
            rows.append({"pool": pool, "member": member, "healthy": bool(h.get("healthy")),
                         "reason": h.get("reason") or h.get("verdict") or "", "cells": ran.get(member, 0)})
    return rows
