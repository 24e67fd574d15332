"""Reading dynamic-dimension bindings from command-line text.

    --dim batch=2 --dim seq=16          (or --dim batch=2,seq=16)
    --input-shape input_ids:2x16        (also input_ids:[2,16], polygraphy style;
                                         scalar: name:[] ; several: a:2x16,b:2x16)

:func:`parse_dim_options` turns the repeated option values into the
``dims`` and ``input_shapes`` arguments of :func:`turnipc.importer.import_model`.
"""

from __future__ import annotations

import re

from .errors import TurnipError


class DimSyntaxError(TurnipError, ValueError):
    """A --dim or --input-shape value that cannot be read."""


_DIM_RE = re.compile(r"^\s*([^=\s][^=]*?)\s*=\s*(\S+)\s*$")
_INT_RE = re.compile(r"^[0-9]+$")


def _int(text: str, what: str, example: str) -> int:
    t = text.strip()
    if not _INT_RE.match(t):
        raise DimSyntaxError(f"cannot read {what}: {text!r} is not a non-negative integer; write it like {example}")
    return int(t)


def parse_dim(text: str) -> dict[str, int]:
    """'batch=2' or 'batch=2,seq=16' -> {'batch': 2, 'seq': 16}."""
    out: dict[str, int] = {}
    parts = [p for p in text.split(",")]
    if not text.strip():
        raise DimSyntaxError("empty --dim value; write it like --dim batch=2")
    for part in parts:
        m = _DIM_RE.match(part)
        if not m:
            raise DimSyntaxError(f"cannot read --dim {text!r}: write NAME=N, e.g. --dim batch=2 (or --dim batch=2,seq=16)")
        name, value = m.group(1), m.group(2)
        v = _int(value, f"--dim {part.strip()!r}", f"--dim {name}=2")
        if name in out and out[name] != v:
            raise DimSyntaxError(f"--dim {name} given twice ({out[name]} and {v}); give it once")
        out[name] = v
    return out


def _parse_shape_text(shape: str, full: str) -> tuple[int, ...]:
    s = shape.strip()
    example = "--input-shape input_ids:2x16 (or input_ids:[2,16])"
    if s.startswith("[") or s.startswith("("):
        close = "]" if s.startswith("[") else ")"
        if not s.endswith(close):
            raise DimSyntaxError(f"cannot read --input-shape {full!r}: unbalanced brackets; write it like {example}")
        body = s[1:-1].strip()
        if not body:
            return ()
        items = [x for x in body.split(",")]
        if items and not items[-1].strip():  # "(2,)"
            items = items[:-1]
    else:
        if not s:
            raise DimSyntaxError(f"cannot read --input-shape {full!r}: no shape after ':'; write it like {example} (scalar: name:[])")
        items = s.lower().split("x")
    return tuple(_int(x, f"--input-shape {full!r}", example) for x in items)


def _split_shapes(text: str) -> list[str]:
    """Split 'a:2x16,b:[2,16]' on the commas outside brackets."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_input_shape(text: str) -> dict[str, tuple[int, ...]]:
    """'input_ids:2x16' -> {'input_ids': (2, 16)}; several may be joined with commas."""
    out: dict[str, tuple[int, ...]] = {}
    for part in _split_shapes(text):
        if ":" not in part:
            raise DimSyntaxError(f"cannot read --input-shape {text!r}: write NAME:SHAPE, e.g. --input-shape input_ids:2x16")
        # the name may itself contain ':' (e.g. 'input:0'): the shape is after the last one
        name, shape = part.rsplit(":", 1)
        name = name.strip()
        if not name:
            raise DimSyntaxError(f"cannot read --input-shape {text!r}: no input name before ':'; write it like input_ids:2x16")
        dims = _parse_shape_text(shape, part.strip())
        if name in out and out[name] != dims:
            raise DimSyntaxError(f"--input-shape {name} given twice with different shapes; give it once")
        out[name] = dims
    return out


def parse_dim_options(dim_opts: list[str] | None, shape_opts: list[str] | None) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    """Repeated --dim and --input-shape values -> (dims, input_shapes)."""
    dims: dict[str, int] = {}
    for text in dim_opts or []:
        for k, v in parse_dim(text).items():
            if k in dims and dims[k] != v:
                raise DimSyntaxError(f"--dim {k} given twice ({dims[k]} and {v}); give it once")
            dims[k] = v
    shapes: dict[str, tuple[int, ...]] = {}
    for text in shape_opts or []:
        for k, s in parse_input_shape(text).items():
            if k in shapes and shapes[k] != s:
                raise DimSyntaxError(f"--input-shape {k} given twice with different shapes; give it once")
            shapes[k] = s
    return dims, shapes


def format_shape(shape: tuple[int, ...]) -> str:
    """(2, 16) -> '2x16'; () -> '[]' (the --input-shape spelling)."""
    return "x".join(str(d) for d in shape) if shape else "[]"
