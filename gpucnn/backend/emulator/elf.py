"""Which kernels can reach a barrier: a call-graph walk over the relocations of an ELF object.

The module is compiled with ``-ffunction-sections``, so every function sits in
its own section, and every call, address-taken function or referenced table
shows up as a relocation from one section to the symbol of another. A kernel
needs fibers when the section of its symbol reaches, through these edges, the
function ``gpucnn_emu_collective`` (the one function every barrier and warp
intrinsic calls; defined in runtime.cpp, so an undefined symbol here).
Working on the compiler's output rather than the source text sees through
macros, templates, inlining and clones; following every reference, not only
calls, keeps the answer conservative. The runtime guard in runtime.cpp backs
it up.
"""

from __future__ import annotations

import struct
from collections import deque

COLLECTIVE_SYMBOL = "gpucnn_emu_collective"

_SHT_SYMTAB, _SHT_RELA, _SHT_REL, _SHT_SYMTAB_SHNDX = 2, 4, 9, 18
_SHN_LORESERVE, _SHN_XINDEX = 0xFF00, 0xFFFF


class ElfError(ValueError):
    """The object file is not the little-endian ELF64 relocatable this module reads."""


def _cstr(blob: bytes, offset: int) -> str:
    return blob[offset:blob.index(b"\0", offset)].decode("utf-8", "replace")


class ObjectFile:
    """Sections, symbols and section-to-section references of an ELF64 ``.o`` file."""

    def __init__(self, data: bytes):
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ElfError("not a little-endian ELF64 file")
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        first = struct.unpack_from("<IIQQQQIIQQ", data, shoff)
        if shnum == 0:  # more than 0xFF00 sections: the count lives in section 0
            shnum = first[5]
        if shstrndx == _SHN_XINDEX:
            shstrndx = first[6]
        self.sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        names = self._contents(data, shstrndx)
        self.section_names = [_cstr(names, s[0]) for s in self.sections]
        self.symbols: list[tuple[str, int]] = []  # (name, section index, or -1 when not defined here)
        self.edges: dict[int, set[int]] = {}  # section -> sections it references
        self.external: dict[int, set[str]] = {}  # section -> undefined symbols it references
        for index, (_, sh_type, *_rest) in enumerate(self.sections):
            if sh_type == _SHT_SYMTAB:
                self._read_symbols(data, index)
        for index, (_, sh_type, *_rest) in enumerate(self.sections):
            if sh_type in (_SHT_RELA, _SHT_REL):
                self._read_relocations(data, index, sh_type == _SHT_RELA)

    def _contents(self, data: bytes, index: int) -> bytes:
        offset, size = self.sections[index][4], self.sections[index][5]
        return data[offset:offset + size]

    def _read_symbols(self, data: bytes, index: int) -> None:
        strtab = self._contents(data, self.sections[index][6])
        table = self._contents(data, index)
        xindex = next((self._contents(data, i) for i, s in enumerate(self.sections)
                       if s[1] == _SHT_SYMTAB_SHNDX and s[6] == index), None)
        for i in range(len(table) // 24):
            st_name, _info, _other, shndx, _value, _size = struct.unpack_from("<IBBHQQ", table, i * 24)
            if shndx == _SHN_XINDEX and xindex is not None:
                shndx, = struct.unpack_from("<I", xindex, i * 4)
            elif shndx == 0 or shndx >= _SHN_LORESERVE:
                shndx = -1  # undefined, absolute or common: not a section of this file
            self.symbols.append((_cstr(strtab, st_name), shndx))

    def _read_relocations(self, data: bytes, index: int, with_addend: bool) -> None:
        target = self.sections[index][7]  # sh_info: the section the relocations patch
        entry = 24 if with_addend else 16
        table = self._contents(data, index)
        refs = self.edges.setdefault(target, set())
        external = self.external.setdefault(target, set())
        for i in range(len(table) // entry):
            r_info, = struct.unpack_from("<Q", table, i * entry + 8)
            sym = r_info >> 32
            if 0 < sym < len(self.symbols):
                name, section = self.symbols[sym]
                if section >= 0:
                    refs.add(section)
                else:
                    external.add(name)

    def symbol_section(self, name: str) -> int:
        """Section index of the defined symbol ``name``, or -1."""
        return next((shndx for sym, shndx in self.symbols if sym == name and shndx >= 0), -1)

    def reaches(self, start: int, symbol: str) -> bool:
        """True when the function ``symbol`` is reachable from section ``start`` along references."""
        goal = self.symbol_section(symbol)
        seen, queue = {start}, deque([start])
        while queue:
            section = queue.popleft()
            if section == goal or symbol in self.external.get(section, ()):
                return True
            for nxt in self.edges.get(section, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return False


def kernels_needing_fibers(object_bytes: bytes, kernel_names: list[str]) -> dict[str, bool]:
    """For each kernel symbol: can it reach a barrier or warp function?

    A kernel whose symbol is missing is answered True (the safe side).
    """
    obj = ObjectFile(object_bytes)
    result = {}
    for name in kernel_names:
        start = obj.symbol_section(name)
        result[name] = start < 0 or obj.reaches(start, COLLECTIVE_SYMBOL)
    return result
