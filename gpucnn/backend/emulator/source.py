"""Text work on a preprocessed ``.cu`` file: find its kernels, rewrite ``__shared__``, add wrappers.

The build step preprocesses a kernel source with ``cuda_emu.h`` force-included;
that header turns ``__global__`` and ``__shared__`` into the marker tokens
``__emu_global__`` and ``__emu_shared__``, which survive preprocessing, so this
module sees every kernel and shared variable after all macros have expanded.
Line markers (``# 12 "file.cu"``) are left in place: the compiler's messages
and debug information keep pointing at the ``.cu`` lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GLOBAL_MARKER = "__emu_global__"
SHARED_MARKER = "__emu_shared__"
LAUNCH_BOUNDS_MARKER = "__emu_launch_bounds__"

_ATTRIBUTE = r"(?:__attribute__\s*\(\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)\)|alignas\s*\([^()]*\)|\[\[[^\]]*\]\])"
_ATTRIBUTE_RE = re.compile(_ATTRIBUTE)
_LINEMARKER_RE = re.compile(r'^# (\d+) "((?:[^"\\]|\\.)*)"((?: \d)*)$', re.MULTILINE)
_SHARED_DECL_RE = re.compile(SHARED_MARKER + r"\s+([^;{}]*);")
_STORAGE_BEFORE_RE = re.compile(r"\b(extern|static)\s*$")
# __launch_bounds__(...) after macro expansion; its arguments may hold one level of parentheses.
_LAUNCH_BOUNDS = LAUNCH_BOUNDS_MARKER + r"\s*\((?:[^()]|\([^()]*\))*\)"
_LAUNCH_BOUNDS_RE = re.compile(LAUNCH_BOUNDS_MARKER + r"\s*\((?P<args>(?:[^()]|\([^()]*\))*)\)")
_KERNEL_HEAD_RE = re.compile(
    GLOBAL_MARKER + r"\s*(?:(?:" + _ATTRIBUTE + "|" + _LAUNCH_BOUNDS + r")\s*)*void\s*(?:(?:" + _ATTRIBUTE + "|" +
    _LAUNCH_BOUNDS + r")\s*)*([A-Za-z_]\w*)\s*\(")
_EXTERN_C_BLOCK_RE = re.compile(r'\bextern\s+"C"\s*\{')
_TYPE_WORDS = {"void", "bool", "char", "short", "int", "long", "float", "double", "signed", "unsigned",
               "const", "volatile", "__restrict__", "__restrict", "restrict", "size_t", "ptrdiff_t"}


class SourceError(ValueError):
    """A construct of the kernel source that the emulator cannot translate."""


@dataclass(frozen=True)
class KernelDecl:
    """An ``extern "C" __global__`` kernel found in the source.

    ``param_names``/``param_types`` are the declared names and type spellings,
    used in error messages; the launcher takes the exact types from the compiled
    library (see ``signature_of`` in cuda_emu.h). ``max_threads`` is the C++
    expression of the kernel's ``__launch_bounds__`` (its first argument, the
    most threads per block), or "" when it declares none; the compiled library
    evaluates it (``gpucnn_emu_max_threads_<name>``).
    """

    name: str
    param_names: tuple[str, ...]
    param_types: tuple[str, ...]
    max_threads: str = ""


def dependencies(preprocessed: str) -> list[str]:
    """The non-system files named in the line markers, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in _LINEMARKER_RE.finditer(preprocessed):
        path, flags = match.group(2), match.group(3).split()
        if "3" in flags or path.startswith("<"):
            continue
        seen.setdefault(path.replace('\\"', '"').replace("\\\\", "\\"), None)
    return list(seen)


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside (), [], {} and <> nesting."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _declarator_name(declarator: str) -> str:
    """``float tile[16][17]`` -> ``tile``; ``*p`` -> ``p``."""
    text = _ATTRIBUTE_RE.sub(" ", declarator).split("=")[0].split("[")[0]
    names = re.findall(r"[A-Za-z_]\w*", text)
    if not names:
        raise SourceError(f"cannot find the variable name in __shared__ declaration {declarator.strip()!r}")
    return names[-1]


def rewrite_shared(preprocessed: str) -> str:
    """Turn the ``__shared__`` markers into host C++.

    ``extern __shared__ T name[];`` (dynamic shared memory) becomes a constant
    pointer to the module's dynamic shared buffer, whose first ``shared_mem``
    bytes the launcher poisons before each block.

    ``__shared__ T name[...];`` becomes a ``static`` variable followed by a call
    that fills it with poison the first time a thread of each block passes the
    declaration (see ``on_shared_declared`` in cuda_emu.h).
    """

    def dynamic(match: re.Match) -> str:
        decl = " ".join(_ATTRIBUTE_RE.sub(" ", match.group(1)).split())
        m = re.fullmatch(r"(.*?)\s*\b([A-Za-z_]\w*)\s*\[\s*\]", decl)
        if not m or not m.group(1):
            raise SourceError(f"unsupported dynamic shared memory declaration 'extern __shared__ {decl};' "
                              "(expected 'extern __shared__ T name[];')")
        ctype, name = m.group(1), m.group(2)
        return f"{ctype}* const {name} = reinterpret_cast<{ctype}*>(::gpucnn_emu::dynamic_shared);"

    counter = 0

    def static(match: re.Match) -> str:
        nonlocal counter
        decl = re.sub(r"\bstatic\b", " ", match.group(1))
        out = [f"static {decl};"]
        for declarator in _split_top_level(decl):
            name = _declarator_name(declarator)
            counter += 1
            out.append(f" static unsigned long long __emu_seen_{counter};"
                       f" [[maybe_unused]] const bool __emu_poisoned_{counter} ="
                       f" ::gpucnn_emu::on_shared_declared(__emu_seen_{counter}, (void*)&{name}, sizeof({name}),"
                       f' "__shared__ {name}");')
        return "".join(out)

    out, pos = [], 0
    for match in _SHARED_DECL_RE.finditer(preprocessed):
        storage = _STORAGE_BEFORE_RE.search(preprocessed, max(0, match.start() - 16), match.start())
        start = storage.start() if storage else match.start()
        out.append(preprocessed[pos:start])
        out.append(dynamic(match) if storage and storage.group(1) == "extern" else static(match))
        pos = match.end()
    out.append(preprocessed[pos:])
    return "".join(out)


def _matching(text: str, open_pos: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one at ``open_pos`` (string literals skipped)."""
    depth = 0
    token = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|' + re.escape(open_ch) + "|" + re.escape(close_ch))
    for m in token.finditer(text, open_pos):
        if m.group() == open_ch:
            depth += 1
        elif m.group() == close_ch:
            depth -= 1
            if depth == 0:
                return m.start()
    raise SourceError(f"unbalanced {open_ch}{close_ch} in the kernel source")


def _declaration_start(text: str, pos: int) -> int:
    """Start of the declaration containing ``pos``: just after the previous ; { or }."""
    return max(text.rfind(ch, 0, pos) for ch in ";{}") + 1


def _split_param(param: str) -> tuple[str, str]:
    """``const float* __restrict__ x`` -> (``const float* __restrict__``, ``x``)."""
    text = " ".join(_ATTRIBUTE_RE.sub(" ", param).split())
    m = re.fullmatch(r"(.*?[\s*&])([A-Za-z_]\w*)", text)
    if m and m.group(2) not in _TYPE_WORDS:
        return m.group(1).strip(), m.group(2)
    return text, ""


def find_kernels(preprocessed: str) -> list[KernelDecl]:
    """Every ``extern "C" __global__ void name(...)`` defined in the source, in order.

    Kernels without C linkage (templates, plain C++ ``__global__`` functions)
    are skipped: CuPy's ``RawModule.get_function`` cannot find them by name either.
    """
    kernels: dict[str, KernelDecl] = {}
    extern_c_blocks: list[tuple[int, int]] | None = None
    for head in _KERNEL_HEAD_RE.finditer(preprocessed):
        decl_start = _declaration_start(preprocessed, head.start())
        prefix = preprocessed[decl_start:head.start()]
        if re.search(r"\btemplate\b", prefix):
            continue
        if not re.search(r'\bextern\s+"C"', prefix):
            if extern_c_blocks is None:
                extern_c_blocks = [(m.end() - 1, _matching(preprocessed, m.end() - 1, "{", "}"))
                                   for m in _EXTERN_C_BLOCK_RE.finditer(preprocessed)]
            if not any(lo < head.start() < hi for lo, hi in extern_c_blocks):
                continue
        close = _matching(preprocessed, head.end() - 1, "(", ")")
        after = _ATTRIBUTE_RE.sub(" ", preprocessed[close + 1:close + 400]).lstrip()
        if not after.startswith("{"):
            continue  # a declaration only; the definition comes elsewhere
        params_text = preprocessed[head.end():close]
        params_text = re.sub(r"^#.*$", " ", params_text, flags=re.MULTILINE)  # line markers
        params = [p.strip() for p in _split_top_level(params_text)]
        if params == [""] or params == ["void"]:
            params = []
        names, types = [], []
        for i, param in enumerate(params):
            ctype, name = _split_param(param)
            types.append(ctype)
            names.append(name or f"arg{i}")
        name = head.group(1)
        bounds = _LAUNCH_BOUNDS_RE.search(preprocessed, decl_start, head.end())
        max_threads = _split_top_level(bounds.group("args"))[0].strip() if bounds else ""
        kernels[name] = KernelDecl(name, tuple(names), tuple(types), max_threads)
    return list(kernels.values())


def launch_wrappers(kernels: list[KernelDecl]) -> str:
    """C++ for one launch entry point and one signature query per kernel.

    ``gpucnn_emu_launch_<name>(config, args, error, error_len)`` runs the grid
    and returns 0, or non-zero with the message copied into ``error``;
    ``gpucnn_emu_signature_<name>()`` returns the parameter type codes;
    ``gpucnn_emu_max_threads_<name>()`` the ``__launch_bounds__`` limit (0: none).
    """
    lines = ['\n# 1 "<gpucnn emulator: generated launch wrappers>"']
    for k in kernels:
        lines.append(
            f'extern "C" __attribute__((visibility("default"))) int gpucnn_emu_launch_{k.name}('
            f"const ::gpucnn_emu::LaunchConfig* cfg, void** args, char* error, unsigned long error_len)"
            f' {{ return ::gpucnn_emu::launch<&{k.name}>("{k.name}", cfg, args, error, error_len); }}')
        lines.append(
            f'extern "C" __attribute__((visibility("default"))) const char* gpucnn_emu_signature_{k.name}(void)'
            f" {{ return ::gpucnn_emu::signature_of(&{k.name}); }}")
        lines.append(
            f'extern "C" __attribute__((visibility("default"))) int gpucnn_emu_max_threads_{k.name}(void)'
            f" {{ return {f'(int)({k.max_threads})' if k.max_threads else '0'}; }}")
    return "\n".join(lines) + "\n"


def _blank_keeping_lines(match: re.Match) -> str:
    """What replaces a removed construct: its newlines, so line numbers stay right."""
    return " " + "\n" * match.group().count("\n")


def translate(preprocessed: str) -> tuple[str, list[KernelDecl]]:
    """The compilable translation unit for a preprocessed source, and its kernels."""
    kernels = find_kernels(preprocessed)
    text = _LAUNCH_BOUNDS_RE.sub(_blank_keeping_lines, rewrite_shared(preprocessed)).replace(GLOBAL_MARKER, "")
    return text + launch_wrappers(kernels), kernels
