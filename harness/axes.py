"""The matrix axes: their names, allowed values and the word that means "not given to QEMU".

Kept as data so the config validator, the matrix expansion, the model and the report all agree
on one list. Values are QEMU's own words where QEMU has them.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT = "default"


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[str, ...] | None  # None: open-ended (validated by `kind`)
    kind: str = "enum"  # enum | int | name
    default: str | int = DEFAULT
    help: str = ""


AXES: tuple[Axis, ...] = (
    Axis("accel", ("tcg", "kvm"), default="tcg", help="QEMU accelerator"),
    Axis("ic_mode", (DEFAULT, "dual", "xics", "xive"), help="-M pseries,ic-mode="),
    Axis("kernel_irqchip", (DEFAULT, "on", "off"), help="-M pseries,kernel-irqchip="),
    Axis("cpu", ("POWER8", "POWER9", "POWER10", "host"), default="POWER9",
         help="-cpu (host: the host's own processor, under KVM)"),
    Axis("cpu_compat", (DEFAULT, "power8", "power9", "power10"), help="-M pseries,max-cpu-compat="),
    Axis("guest_xive", (DEFAULT, "off"), help="off appends xive=off to the guest command line"),
    Axis("smp", None, kind="int", default=2, help="-smp N (vCPUs)"),
    Axis("firmware", ("slof", "vof"), default="slof", help="slof (QEMU's default) or vof (x-vof=on)"),
    Axis("qemu", None, kind="name", default="system", help="a QEMU build known to the host"),
)

AXIS_BY_NAME: dict[str, Axis] = {a.name: a for a in AXES}
AXIS_NAMES: tuple[str, ...] = tuple(a.name for a in AXES)

# CPU models and compat levels ordered by ISA level, for rules that compare them.
CPU_LEVEL = {"POWER8": 8, "POWER9": 9, "POWER10": 10}
COMPAT_LEVEL = {"power8": 8, "power9": 9, "power10": 10}
