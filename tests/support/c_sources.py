"""Reading C sources the project generates or ships: array initializers and
``#define`` / ``constexpr`` constants (what tests compare with Python values)."""
import re

_ARRAY_RE = re.compile(r"\[\]\s*=\s*\{(?P<body>[^}]*)\}", re.S)


def parse_c_array(text):
    """Bytes of the first ``x[] = { ... }`` initializer in C source ``text``."""
    m = _ARRAY_RE.search(text)
    if not m:
        raise ValueError("no array initializer found")
    values = [v.strip() for v in m.group("body").split(",") if v.strip()]
    return bytes(int(v, 0) for v in values)


def read_header_defines(text):
    """``#define NAME VALUE`` lines -> {NAME: VALUE} (integers parsed, a ``u``
    suffix and enclosing parentheses dropped; other values as text, a
    trailing comment removed)."""
    out = {}
    for m in re.finditer(r"^#define\s+(\w+)[ \t]+(.+?)\s*$", text, re.M):
        value = re.sub(r"\s*/\*.*?\*/\s*$", "", m.group(2))
        num = re.fullmatch(r"\(?(-?\d+)u?\)?", value)
        out[m.group(1)] = int(num.group(1)) if num else value
    return out


def read_constexprs(text):
    """``constexpr TYPE NAME = VALUE;`` declarations -> {NAME: VALUE as text}."""
    return {m.group(1): m.group(2).strip() for m in
            re.finditer(r"constexpr\s+[\w:\s\*]*?\b(k\w+)\s*=\s*([^;]+);", text)}
