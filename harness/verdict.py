"""Expected versus observed: the verdict of a cell and the reason a person reads. Pure.

`decide` is the one place a cell's verdict is taken, from all of its evidence at once: the
model's prediction, what was observed (stage, how QEMU ended, the mode in both views, the guest
kernel's findings of every boot), each workload's result and the migration's (its hops already
weighed against the known issues). Reruns add attempts on top (flaky.final_verdict), never a
second judgement of one attempt."""

from __future__ import annotations

from typing import Sequence

from .cell import Expected, Observed, Verdict
from .model import matches_error
from .records import MigrationResult, WorkloadResult

# The words of QEMU's kernel-irqchip fallback (hw/ppc/spapr_irq.c spapr_irq_init_kvm()).
KVM_FALLBACK = "kernel_irqchip allowed but unavailable"
# How a predicted failure must end to be the prediction: QEMU refusing cleanly (exit 1 and its
# error line, errors.QemuRefused). The same words before an abort or a signal are a crash.
REFUSAL_KINDS = frozenset({"QemuRefused"})


def decide(e: Expected, o: Observed, workloads: Sequence[WorkloadResult] = (), migration: MigrationResult | None = None,
           *, asked: Sequence[str] = (), plan: str = "none",
           known_boot: str | None = None) -> tuple[Verdict, str]:
    """The cell's verdict and reason. `asked` are the workloads the cell asked for and `plan` its
    migration plan: asked for and absent is ERROR (never run is never green). `known_boot` is the
    id of the known issue that known_issues.explain_boot found to explain all of a failed boot's
    evidence (the host's findings are in the error's words): that boot is XFAIL."""
    return _with_migration(_with_workloads(_boot(e, o, known_boot), workloads, asked), migration, plan)


def _boot(e: Expected, o: Observed, known_boot: str | None = None) -> tuple[Verdict, str]:
    """The boot and CAS negotiation against the model, with the guest kernel's findings."""
    if e.skip:
        return Verdict.SKIP, e.skip
    if o.infra:
        return Verdict.ERROR, o.error or "infrastructure failure"

    if e.error:
        if o.error and o.stage == e.stage and matches_error(e, o.error):
            if o.error_kind not in REFUSAL_KINDS:
                return Verdict.FAIL, (f"{e.rule} predicted QEMU to refuse at {e.stage} with /{e.error}/; it said so but "
                                      f"did not exit cleanly ({o.error_kind or 'unknown end'}, exit {o.exit_code}): {o.error}")
            return Verdict.XFAIL, f"failed at {o.stage} as predicted by {e.rule}: {o.error}"
        if o.error:
            return Verdict.FAIL, (f"{e.rule} predicted a failure at {e.stage} matching /{e.error}/, "
                                  f"but it failed at {o.stage}: {o.error}")
        return Verdict.FAIL, (f"{e.rule} predicted a failure at {e.stage} matching /{e.error}/, "
                              f"but the guest booted in {o.mode or 'an undetermined mode'}")

    if o.error:
        if known_boot is not None and not o.infra:
            return Verdict.XFAIL, f"known issue {known_boot}: expected {e.mode} ({e.rule}), but it failed at {o.stage}: {o.error}"
        return Verdict.FAIL, f"expected {e.mode} ({e.rule}), but it failed at {o.stage}: {o.error}"
    g, h = o.guest, o.host
    if g is None or h is None:
        return Verdict.ERROR, "the outcome was not observed"
    signals = {"/proc/interrupts": g.mode_from_chips, "device tree": g.mode_from_dt, "dmesg": g.mode_from_dmesg}
    if g.mode is None:
        seen = ", ".join(f"{k}={v}" for k, v in signals.items())
        if not any(signals.values()):
            return Verdict.ERROR, f"the guest's output shows no interrupt mode ({seen})"
        return Verdict.FAIL, f"the guest's own signals disagree: {seen}"
    if h.mode is None:
        return Verdict.ERROR, "QMP info pic shows neither XIVE nor XICS"
    if g.mode != h.mode:
        return Verdict.FAIL, f"guest view says {g.mode} but host view (info pic) says {h.mode}"
    problems = []
    if o.mode != e.mode:
        problems.append(f"negotiated {o.mode}, expected {e.mode} ({e.rule})")
    if e.byte23 and o.platform_support != e.byte23:
        problems.append(f"platform offer byte 23 is {o.platform_support}, expected {e.byte23}")
    if e.irqchip and h.irqchip != e.irqchip:
        problems.append(f"irqchip is {h.irqchip}, expected {e.irqchip}")
    fallback = [w for w in o.qemu_warnings if KVM_FALLBACK in w]
    if e.warning and not any(e.warning in w for w in o.qemu_warnings):
        problems.append(f"QEMU did not warn {e.warning!r} ({e.rule})")
    elif fallback and not e.warning:
        problems.append(f"QEMU fell back unexpectedly: {fallback[0]!r}")
    if problems:
        return Verdict.FAIL, "; ".join(problems)
    if o.kernel_findings:
        f = o.kernel_findings[0]
        more = f" (and {len(o.kernel_findings) - 1} more)" if len(o.kernel_findings) > 1 else ""
        return Verdict.FAIL, f"{o.mode} as predicted, but the guest kernel logged {f['kind']}: {f['line']!r}{more}"
    return Verdict.PASS, f"{o.mode} as predicted by {e.rule}"


def _with_workloads(cas: tuple[Verdict, str], workloads: Sequence[WorkloadResult],
                    asked: Sequence[str] = ()) -> tuple[Verdict, str]:
    """The cell's verdict from its CAS verdict and its workloads' verdicts.

    A workload can only make a PASS cell worse: FAIL if any workload failed, else ERROR if any
    could not be judged. A SKIP workload (e.g. too few vCPUs) leaves the cell as it is.
    """
    verdict, reason = cas
    if verdict not in (Verdict.PASS, Verdict.FAIL) or not asked:
        return cas
    if not workloads and verdict == Verdict.PASS:
        return Verdict.ERROR, "the workloads did not run"
    failed = [w for w in workloads if w.verdict == Verdict.FAIL.value]
    errors = [w for w in workloads if w.verdict == Verdict.ERROR.value]
    if verdict == Verdict.FAIL:
        return cas
    if failed:
        return Verdict.FAIL, "; ".join(f"workload {w.name}: {w.reason}" for w in failed)
    if errors:
        return Verdict.ERROR, "; ".join(f"workload {w.name}: {w.reason}" for w in errors)
    return cas


def _with_migration(cell: tuple[Verdict, str], mig: MigrationResult | None, plan: str) -> tuple[Verdict, str]:
    """Fold the migration's verdict into a cell whose boot and workloads passed."""
    verdict, reason = cell
    if plan == "none" or verdict != Verdict.PASS:
        return cell
    if mig is None:
        return Verdict.ERROR, "the migration did not run"
    if mig.verdict == Verdict.PASS:
        return Verdict.PASS, f"{reason}; migration {plan}: {mig.reason or 'ok'}"
    return mig.verdict, f"migration {plan}: {mig.reason}"


# Evidence that the system under test is defective however rarely it shows: a cell that showed
# any of it in one attempt is FAIL even if a later attempt passed (never FLAKY).
DEFECT_ERRORS = frozenset({"QemuCrashed", "GuestPanic"})
DEFECT_SYMPTOMS = frozenset({"disk-data-corrupt", "destination-crashed"})


def defects(record: dict) -> list[str]:
    """What in one attempt's record is a defect, not bad luck (pure): a kernel finding (panic,
    Oops, BUG, a lockup, an RCU stall), a QEMU that crashed, corrupted data."""
    o = record.get("observed") or {}
    out = [f"the guest kernel logged {f.get('kind')}: {f.get('line')!r}" for f in o.get("kernel_findings") or ()]
    if o.get("error_kind") in DEFECT_ERRORS:
        out.append(f"{o['error_kind']}: {o.get('error')}")
    for w in record.get("workloads") or ():
        if w.get("symptom") in DEFECT_SYMPTOMS:
            out.append(f"workload {w['name']}: {w.get('symptom')}: {w.get('reason')}")
        elif str(w.get("reason", "")).split(":", 1)[0] in DEFECT_ERRORS:
            out.append(f"workload {w['name']}: {w.get('reason')}")
    for h in ((record.get("migration") or {}).get("hops") or ()):
        for sym, problem in zip(h.get("symptoms") or (), h.get("problems") or ()):
            if sym in DEFECT_SYMPTOMS or sym.startswith("kernel:"):
                out.append(f"hop {h.get('name')}: {problem}")
    return out


def failure_signature(record: dict) -> tuple[str, ...]:
    """What a failed cell's failure *is*, for telling one failure from another (pure): where it
    failed and how QEMU ended, the guest kernel's findings, the failing workloads and their
    symptoms, the failing hops' symptoms, a wrong mode. Two FAILs with different signatures are
    different defects (IPIs lost is not a kernel panic), whatever their verdicts say."""
    o, e = record.get("observed") or {}, record.get("expected") or {}
    sig: list[str] = []
    if o.get("error_kind") or o.get("error"):
        end = f" exit {o['exit_code']}" if o.get("exit_code") not in (None, 0) else ""
        sig.append(f"error {o.get('stage') or '?'}: {o.get('error_kind') or 'error'}{end}")
    if o.get("mode") and e.get("mode") and o["mode"] != e["mode"]:
        sig.append(f"mode {o['mode']} (expected {e['mode']})")
    sig += sorted({f"kernel {f.get('kind')}" for f in o.get("kernel_findings") or ()})
    for w in record.get("workloads") or ():
        if w.get("verdict") in ("FAIL", "ERROR"):
            sig.append(f"workload {w.get('name')}: {w.get('symptom') or str(w.get('reason', '')).split(':', 1)[0]}")
    for h in ((record.get("migration") or {}).get("hops") or ()):
        if h.get("verdict") not in (None, "PASS"):
            sig.append(f"hop {h.get('name')}: {', '.join(sorted(set(h.get('symptoms') or ()))) or h.get('verdict')}")
    return tuple(sig)
