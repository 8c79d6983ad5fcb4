"""What an ELF file needs and says: its shared libraries (DT_NEEDED), its program interpreter
(PT_INTERP) and, for a kernel module, its `.modinfo` strings (`depends=`, `vermagic=`). Read from
the bytes with struct: the files are ppc64el, so the host's own tools cannot load them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import KitError


@dataclass(frozen=True)
class ElfInfo:
    needed: tuple[str, ...] = ()
    interpreter: str | None = None
    modinfo: tuple[str, ...] = ()  # a kernel module's key=value strings


def elf_info(data: bytes) -> ElfInfo | None:
    """DT_NEEDED, PT_INTERP and .modinfo of a 64-bit little-endian ELF file; None if it is not one."""
    if data[:4] != b"\x7fELF":
        return None
    if data[4] != 2 or data[5] != 1:
        raise KitError("not a 64-bit little-endian ELF file (the image is ppc64el only)")
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, 0x36)
    interp = None
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            interp = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]

    def body(s) -> bytes:
        return data[s[4]:s[4] + s[5]]

    names = body(sections[shstrndx]) if sections else b""

    def name(s) -> str:
        return names[s[0]:names.index(b"\0", s[0])].decode()

    needed: list[str] = []
    modinfo: tuple[str, ...] = ()
    for s in sections:
        if s[1] == 6:  # SHT_DYNAMIC: (tag, value) pairs, names in the string table sh_link names
            strtab = body(sections[s[6]])
            dyn = body(s)
            for off in range(0, len(dyn) - 15, 16):
                tag, val = struct.unpack_from("<qQ", dyn, off)
                if tag == 0:
                    break
                if tag == 1:  # DT_NEEDED
                    needed.append(strtab[val:strtab.index(b"\0", val)].decode())
        elif name(s) == ".modinfo":
            modinfo = tuple(x.decode(errors="replace") for x in body(s).split(b"\0") if x)
    return ElfInfo(tuple(needed), interp, modinfo)


def function_symbols(data: bytes) -> list[tuple[int, int, str]]:
    """(address, size, name) of every function in a 64-bit little-endian ELF file's symbol table
    (.symtab, STT_FUNC), sorted by address; [] when it has none (stripped) or is not ELF. What
    names the code an emulated host's vCPUs run, from its own kernel (vmlinux)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3a)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    out = []
    for s in sections:
        if s[1] != 2:  # SHT_SYMTAB; its names are in the string table sh_link names
            continue
        strtab = sections[s[6]]
        names = data[strtab[4]:strtab[4] + strtab[5]]
        for st_name, st_info, _, _, st_value, st_size in struct.iter_unpack("<IBBHQQ", data[s[4]:s[4] + s[5]]):
            if st_info & 0xF == 2 and st_value:  # STT_FUNC
                out.append((st_value, st_size, names[st_name:names.index(b"\0", st_name)].decode(errors="replace")))
    return sorted(out)
