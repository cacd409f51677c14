"""Deterministic file content with realistic compressibility, generated fast.

Benchmarks of an image builder are dominated by compression and hashing, so the synthetic
corpus must compress like real packages do: zeros would make gzip look free, random noise would
make it look hopeless. Real toolchain packages are a mix of source text (gzip ratio ~0.25),
machine code with structured tables (~0.4) and some already-compressed or high-entropy data
(~1.0). This module produces each of those from a seeded `random.Random`:

- text: lines drawn from a pool generated once from a small grammar over a synthetic
  vocabulary (Go, C, shell, config/doc flavours);
- ELF-like binaries: a real ELF64 header and program headers, a `.text` built from a pool of
  "functions" (instruction-shaped byte templates with random immediates), `.rodata` strings,
  a symbol table of structured 24-byte records, and a high-entropy section;
- compressed blobs: real gzip of generated text (like man pages and `.gz` docs).

Everything is assembled from precomputed pools with `bytes.join`, so hundreds of MB take
seconds, and the same seed always gives the same bytes.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable

SYLLABLES = (
    "ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo ga ge gi go gu ha he hi ho "
    "ja je ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po pu ra "
    "re ri ro ru sa se si so su ta te ti to tu va ve vi vo wa we xa ya yo za ze zi str "
    "ch sh th tr pr pl bl cl gr fl sp st sk mp nt nd rk ck ll ss"
).split()
ENGLISH = (
    "the a an of to in for is are be by with on at from that this it as or and not if "
    "when returns reports value error buffer file path name size count index state must "
    "may should called after before each new set get read write open close lock data type "
    "list map key entry node tree queue cache the the of to a is"
).split()
GO_TYPES = (
    "int int64 uint32 uint64 string []byte error bool byte rune float64 *Reader *Writer "
    "io.Reader io.Writer context.Context []string map[string]int *sync.Mutex uintptr"
).split()
C_TYPES = "int long char size_t uint32_t uint64_t void double ssize_t off_t".split()

_GO_TEMPLATES = (
    "// {Ident} {sentence}.",
    "// {sentence}.",
    "func {Ident}({a} {T}, {b} {T}) ({T}, error) {{",
    "func ({r} *{Ident}) {Ident}({a} {T}) {T} {{",
    "\t{a} := {b}.{Ident}({c}, {num})",
    "\t{a}, err := {pkg}.{Ident}({b})",
    "\tif err != nil {{",
    "\t\treturn nil, fmt.Errorf(\"{w}: {sentence}: %w\", err)",
    "\t\treturn {a}, nil",
    "\t}}",
    "}}",
    "",
    "\tfor i := 0; i < len({a}); i++ {{",
    "\t\t{a}[i] = {b}[i] {op} {num}",
    "\tswitch {a}.{Ident} {{",
    "\tcase {Ident}, {Ident}:",
    "type {Ident} struct {{",
    "\t{Ident} {T} `json:\"{w},omitempty\"`",
    "\t{a} += {b} {op} {c}",
    "\tdefer {a}.Close()",
    "\t{r}.{a} = append({r}.{a}, {b})",
    "const {Ident} = {num}",
    "\t\"{pkg}/{w}\"",
)
_C_TEMPLATES = (
    "/* {sentence}. */",
    " * {sentence}.",
    "static {CT} {w}_{w}({CT} {a}, {CT} *{b})",
    "{{",
    "}}",
    "\tif ({a} {cmp} {num})",
    "\t\treturn -{NUM};",
    "\t{a} = {w}_{w}({b}, {c} + {num});",
    "#define {NUM}_{NUM} {num}",
    "#include <{w}/{w}.h>",
    "\tstruct {w} *{a} = {b}->{c};",
    "",
    "\tfor ({a} = 0; {a} < {b}; {a}++)",
    "extern {CT} {w}_{w}({CT});",
)
_SH_TEMPLATES = (
    "# {sentence}.",
    "{NUM}=\"${{{NUM}:-/usr/{w}/{w}}}\"",
    "if [ -f \"${NUM}/{w}\" ]; then",
    "\t{w} --{w}={num} \"$@\"",
    "fi",
    "case \"$1\" in",
    "\t{w}) {w} -{l} \"${NUM}\" ;;",
    "esac",
    "{w}() {{",
    "}}",
    "",
)
_DOC_TEMPLATES = (
    "{Sentence}. {Sentence}.",
    "{Sentence}, {sentence}.",
    "",
    ".TH {NUM} {num}",
    ".SH {NUM}",
    "  --{w}-{w}=<{w}>   {sentence}",
    "{w} = {num}",
    "[{w}]",
    "{w}.{w} = \"{w}\"",
)
TEMPLATES = {"go": _GO_TEMPLATES, "c": _C_TEMPLATES, "sh": _SH_TEMPLATES, "doc": _DOC_TEMPLATES}

# x86-64-shaped instruction templates: (fixed opcode bytes, number of immediate bytes, weight).
_INSNS: tuple[tuple[bytes, int, int], ...] = (
    (b"\x48\x89\xe5", 0, 6), (b"\x55", 0, 5), (b"\x5d", 0, 5), (b"\xc3", 0, 6),
    (b"\x48\x8b\x45", 1, 30), (b"\x48\x89\x45", 1, 25), (b"\x8b\x45", 1, 20),
    (b"\x89\x45", 1, 18), (b"\xe8", 4, 28), (b"\xe9", 4, 6), (b"\x74", 1, 14),
    (b"\x75", 1, 14), (b"\xeb", 1, 10), (b"\x48\x83\xec", 1, 5), (b"\x48\x83\xc4", 1, 5),
    (b"\x48\x8d\x05", 4, 12), (b"\x48\x8d\x3d", 4, 10), (b"\x31\xc0", 0, 8),
    (b"\x48\x85\xc0", 0, 12), (b"\x0f\x84", 4, 8), (b"\x0f\x85", 4, 8),
    (b"\x48\x8b\x44\x24", 1, 16), (b"\x48\x89\x44\x24", 1, 16), (b"\x48\x8b\x4c\x24", 1, 10),
    (b"\xb8", 4, 7), (b"\xbf", 4, 6), (b"\x66\x0f\x1f\x44\x00\x00", 0, 4),
    (b"\x0f\x1f\x40\x00", 0, 3), (b"\x48\x39\xc8", 0, 6), (b"\x48\x01\xd0", 0, 6),
    (b"\x4c\x8b\x05", 4, 4), (b"\x41\x57", 0, 3), (b"\x41\x56", 0, 3), (b"\x41\x5f", 0, 3),
    (b"\xf3\x0f\x1e\xfa", 0, 3), (b"\x48\xc7\x44\x24", 5, 6), (b"\x0f\xb6\x44\x24", 1, 5),
    (b"\x48\x63\xd0", 0, 3), (b"\x48\xc1\xe0", 1, 4), (b"\xcc", 0, 2),
)


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 2, 3, 3, 4))))


class ContentGenerator:
    """Produces file bodies of a requested kind and approximate size.

    Pools (text lines per flavour, machine-code functions, rodata strings) are built lazily
    from the seed, once; after that each file costs a few `random` calls and one join.
    """

    def __init__(self, seed: int, vocabulary: int = 2500) -> None:
        self.seed = seed
        self.rng = random.Random(f"content:{seed}")
        vocab_rng = random.Random(f"vocab:{seed}")
        words = sorted({_word(vocab_rng) for _ in range(vocabulary)})
        vocab_rng.shuffle(words)
        self.words = words
        # Zipf-like weights: a few words are very common, most are rare.
        cum, total = [], 0.0
        for i in range(len(words)):
            total += 1.0 / (i + 3)
            cum.append(total)
        self.word_cum_weights = cum
        self.text_local_fraction = 0.35
        self._lines: dict[str, list[bytes]] = {}
        self._functions: list[bytes] | None = None
        self._strings: list[bytes] | None = None

    # ------------------------------------------------------------------ vocabulary helpers
    def _w(self, rng: random.Random) -> str:
        return rng.choices(self.words, cum_weights=self.word_cum_weights)[0]

    def _sentence(self, rng: random.Random) -> str:
        n = rng.randint(3, 12)
        out = []
        for _ in range(n):
            out.append(rng.choice(ENGLISH) if rng.random() < 0.55 else self._w(rng))
        return " ".join(out)

    def _fill(self, template: str, rng: random.Random) -> str:
        def ident() -> str:
            return "".join(self._w(rng).capitalize() for _ in range(rng.randint(1, 3)))

        fields: dict[str, Callable[[], str]] = {
            "Ident": ident,
            "sentence": lambda: self._sentence(rng),
            "Sentence": lambda: self._sentence(rng).capitalize(),
            "a": lambda: self._w(rng)[:rng.randint(1, 8)],
            "b": lambda: self._w(rng)[:rng.randint(1, 8)],
            "c": lambda: self._w(rng),
            "r": lambda: self._w(rng)[:1],
            "w": lambda: self._w(rng),
            "l": lambda: rng.choice("abcdefghijklmnopqrstuvwxyz"),
            "pkg": lambda: self._w(rng),
            "T": lambda: rng.choice(GO_TYPES),
            "CT": lambda: rng.choice(C_TYPES),
            "num": lambda: str(rng.choice((0, 1, 2, 8, 16, 64, rng.randint(0, 99999)))),
            "NUM": lambda: self._w(rng).upper(),
            "op": lambda: rng.choice("+-*^|&"),
            "cmp": lambda: rng.choice(("<", ">", "==", "!=", "<=")),
        }

        class _Lazy(dict):
            def __missing__(self, key: str) -> str:
                return fields[key]()

        return template.format_map(_Lazy())

    def _pool(self, flavour: str) -> list[bytes]:
        pool = self._lines.get(flavour)
        if pool is None:
            rng = random.Random(f"lines:{flavour}:{self.seed}")
            templates = TEMPLATES[flavour]
            pool = [self._fill(rng.choice(templates), rng).encode() + b"\n" for _ in range(24000)]
            self._lines[flavour] = pool
        return pool

    # ------------------------------------------------------------------ content kinds
    def text(self, size: int, flavour: str = "go", header: bytes = b"") -> bytes:
        """Source-like text of about `size` bytes (flavours: go, c, sh, doc).

        Each file draws its lines from its own small sample of the pool, so lines repeat
        within a file the way identifiers and idioms do in real source."""
        pool = self._pool(flavour)
        rng = self.rng
        n = max(1, size // 30)
        local = rng.sample(pool, k=min(len(pool), max(4, int(n * self.text_local_fraction))))
        parts = [header]
        have = len(header)
        while have < size:
            chunk = rng.choices(local, k=n)
            parts.extend(chunk)
            have += sum(map(len, chunk))
            n = max(1, (size - have) // 30 + 1)
        return b"".join(parts)[: max(size, len(header))]

    def _function_pool(self) -> list[bytes]:
        """Functions assembled from a pool of basic blocks: compilers emit the same idioms
        (prologues, spills, call sequences) over and over, which is what makes code
        compress to ~0.4 rather than ~0.6."""
        if self._functions is None:
            rng = random.Random(f"functions:{self.seed}")
            templates = [t for t, _, _ in _INSNS]
            imms = [n for _, n, _ in _INSNS]
            weights = [w for _, _, w in _INSNS]
            idx = list(range(len(_INSNS)))
            blocks = []
            for _ in range(2500):
                parts = []
                for i in rng.choices(idx, weights, k=rng.randint(2, 9)):
                    parts.append(templates[i])
                    n = imms[i]
                    if n == 1:
                        # Displacements are small multiples of 8 more often than not.
                        parts.append(bytes((rng.choice((8, 16, 24, 32, 0xF8, 0xF0))
                                            if rng.random() < 0.7 else rng.getrandbits(8),)))
                    elif n:
                        # Relative targets/constants: low bytes vary, high bytes mostly 0/ff.
                        lo = rng.randbytes(2)
                        hi = b"\x00\x00" if rng.random() < 0.7 else b"\xff\xff"
                        parts.append((lo + hi + b"\x00")[:n])
                blocks.append(b"".join(parts))
            funcs = []
            for _ in range(4000):
                parts = [b"\xf3\x0f\x1e\xfa\x55\x48\x89\xe5"]
                for block in rng.choices(blocks, k=rng.randint(3, 30)):
                    parts.append(block)
                    # A call or branch with a fresh target between blocks.
                    if rng.random() < 0.35:
                        parts.append(b"\xe8" + rng.randbytes(2) + b"\x00\x00")
                    else:
                        parts.append(b"\x74" + bytes((rng.getrandbits(4) * 4,)))
                parts.append(b"\x5d\xc3")
                pad = (-sum(map(len, parts))) % 16
                parts.append(b"\xcc" * pad)
                funcs.append(b"".join(parts))
            self._functions = funcs
        return self._functions

    def _string_pool(self) -> list[bytes]:
        if self._strings is None:
            rng = random.Random(f"strings:{self.seed}")
            out = []
            for _ in range(12000):
                kind = rng.random()
                if kind < 0.4:
                    s = self._sentence(rng)
                elif kind < 0.7:
                    s = "/".join(self._w(rng) for _ in range(rng.randint(2, 5)))
                else:
                    s = ".".join(self._w(rng) for _ in range(rng.randint(2, 4)))
                out.append(s.encode() + b"\0")
            self._strings = out
        return self._strings

    def elf(self, size: int, shared: bool = False, soname: str = "",
            entropy: float = 0.04) -> bytes:
        """An ELF64 x86-64 file of about `size` bytes: headers, code, strings, symbols and a
        high-entropy section (`entropy` fraction). With `soname`, a `.dynamic` section carries
        DT_SONAME so ELF readers find it."""
        rng = self.rng
        size = max(size, 1024)
        text_n = int(size * 0.46)
        ro_n = int(size * 0.22)
        sym_n = int(size * 0.14) // 24 * 24
        data_n = int(size * 0.10) // 8
        hi_n = int(size * entropy)

        funcs = self._function_pool()
        text = b"".join(rng.choices(funcs, k=max(1, text_n // 260)))[:text_n]
        rodata = b"".join(rng.choices(self._string_pool(), k=max(1, ro_n // 30)))[:ro_n]
        # Symbol table: monotone addresses, small sizes, a handful of info/other values.
        entries = []
        value = 0x401000
        pack = struct.Struct("<IBBHQQ").pack
        name_off = 1
        for _ in range(sym_n // 24):
            fsize = rng.choice((16, 32, 48, 64, 96, 128, 208, 384, rng.randint(16, 4096)))
            entries.append(pack(name_off, rng.choice((0x12, 0x12, 0x11, 0x02)), 0,
                                rng.choice((14, 14, 16, 25)), value, fsize))
            name_off += rng.randint(6, 40)
            value += fsize
        symtab = b"".join(entries)
        high = rng.randbytes(hi_n)
        # .data: pointer tables (addresses with small strides) and small integers.
        words = []
        addr = 0x500000
        for _ in range(data_n):
            addr += rng.choice((8, 8, 16, 24, 32, 64, 4096))
            words.append(addr if rng.random() < 0.7 else rng.choice((0, 1, 2, 0xFFFFFFFF)))
        data = struct.pack(f"<{len(words)}Q", *words)

        dynamic = b""
        dynstr = b""
        if soname:
            dynstr = b"\0" + soname.encode() + b"\0" + b"libc.so.6\0"
            dyn = struct.Struct("<qQ").pack
            dynamic = dyn(1, 1 + len(soname) + 1) + dyn(14, 1) + dyn(0, 0)  # NEEDED, SONAME

        sections: list[tuple[bytes, bytes, int]] = [  # (name, body, sh_type)
            (b".text", text, 1), (b".rodata", rodata, 1), (b".symtab", symtab, 2),
            (b".data", data, 1), (b".gopclntab", high, 1),
        ]
        if soname:
            sections += [(b".dynstr", dynstr, 3), (b".dynamic", dynamic, 6)]
        shstr = b"\0" + b"".join(n + b"\0" for n, _, _ in sections) + b".shstrtab\0"
        sections.append((b".shstrtab", shstr, 3))

        phnum = 4
        offset = 64 + 56 * phnum
        layout = []
        for _name, body, _ in sections:
            offset += (-offset) % 16
            layout.append(offset)
            offset += len(body)
        offset += (-offset) % 8
        shoff = offset

        out = bytearray()
        out += b"\x7fELF\x02\x01\x01\x00" + bytes(8)
        out += struct.pack("<HHIQQQIHHHHHH", 3 if shared else 2, 62, 1, 0x401000 + 0x40,
                           64, shoff, 0, 64, 56, phnum, 64, len(sections) + 1,
                           len(sections))
        for i in range(phnum):
            out += struct.pack("<IIQQQQQQ", (6, 1, 1, 2)[i], (4, 5, 4, 6)[i],
                               layout[min(i, len(layout) - 1)], 0x400000 + i * 0x1000,
                               0x400000 + i * 0x1000, 0x1000 * (i + 1), 0x1000 * (i + 1),
                               0x1000)
        for off, (_, body, _) in zip(layout, sections, strict=True):
            out += bytes(off - len(out))
            out += body
        out += bytes(shoff - len(out))
        out += bytes(64)  # SHN_UNDEF
        name_off = 1
        names = [name for name, _, _ in sections]
        dynstr_index = names.index(b".dynstr") + 1 if b".dynstr" in names else 0
        for off, (name, body, sh_type) in zip(layout, sections, strict=True):
            link = dynstr_index if sh_type == 6 else 0
            entsize = 24 if sh_type == 2 else (16 if sh_type == 6 else 0)
            out += struct.pack("<IIQQQQIIQQ", name_off, sh_type, 2, 0, off, len(body), link, 0,
                               16, entsize)
            name_off += len(name) + 1
        return bytes(out)

    def compressed(self, size: int, flavour: str = "doc") -> bytes:
        """A real gzip stream (like `man1/ls.1.gz`) of about `size` compressed bytes."""
        raw = self.text(size * 3, flavour)
        co = zlib.compressobj(6, zlib.DEFLATED, 31)
        return co.compress(raw) + co.flush()

    def noise(self, size: int) -> bytes:
        """Incompressible bytes (already-compressed archives, keys, fonts)."""
        return self.rng.randbytes(size)

    def make(self, kind: str, size: int, **kw: object) -> bytes:
        """Dispatch by kind name: go, c, sh, doc, elf, so, gz, noise."""
        if kind in TEMPLATES:
            return self.text(size, kind)
        if kind == "elf":
            return self.elf(size)
        if kind == "so":
            return self.elf(size, shared=True, soname=str(kw.get("soname", "")))
        if kind == "gz":
            return self.compressed(size)
        if kind == "noise":
            return self.noise(size)
        raise ValueError(f"unknown content kind {kind!r}")
