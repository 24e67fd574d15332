"""Renderers of a :class:`PlanDiff`: rich tables for a terminal, Markdown for a pull request.

(JSON is ``PlanDiff.to_obj()``, printed by the command.)
"""

from __future__ import annotations

import math
from typing import Any

from ..units import format_bytes
from .compare import EXIT_CHANGED, EXIT_SAME, EXIT_THRESHOLD, TENSOR_LISTS, PlanDiff
from .metrics import MetricDiff


def _fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "bytes":
        return format_bytes(v)
    if unit == "s":
        return _fmt_time(v)
    if unit == "flops":
        return _fmt_si(v, "FLOP")
    return f"{int(v):,}"


def _fmt_delta(m: MetricDiff) -> str:
    d = m.delta
    if d is None:
        return "n/a"
    if d == 0:
        return "="
    sign = "+" if d > 0 else "-"
    return sign + _fmt_value(abs(d), m.unit)


def _fmt_pct(m: MetricDiff) -> str:
    p = m.pct
    if p is None:
        return "n/a"
    if p == 0 and not m.changed:
        return ""
    if math.isinf(p):
        return "new"
    return f"{p:+.1f}%"


def _fmt_time(s: float) -> str:
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(s) >= f:
            return f"{s / f:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def _fmt_si(v: float, unit: str) -> str:
    for p, f in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.3g} {p}{unit}"
    return f"{v:.0f} {unit}"


def _fmt_threshold(t: dict[str, Any]) -> str:
    v = t["value"]
    if v is None:
        val = "n/a"
    elif v == "inf":
        val = "new (was 0)"
    elif t["relative"]:
        val = f"{v:+.1f}%"
    elif t["metric"] == "makespan_s":
        val = ("+" if v >= 0 else "-") + _fmt_time(abs(v))
    else:
        val = ("+" if v >= 0 else "-") + format_bytes(abs(v))
    return val


def _tensor_line(kind: str, e: dict[str, Any]) -> str:
    if kind == "resized":
        o, n = e["old"], e["new"]
        dt = "" if o["dtype"] == n["dtype"] else f" {o['dtype']} -> {n['dtype']}"
        return (f"{e['name']}: {format_bytes(o['bytes'])} -> {format_bytes(n['bytes'])} "
                f"({'+' if e['delta_bytes'] >= 0 else '-'}{format_bytes(abs(e['delta_bytes']))}), "
                f"shape {o['shape']} -> {n['shape']}{dt}")
    if kind in ("added", "removed"):
        return f"{e['name']}: {format_bytes(e['bytes'])} {e['kind']} {e['dtype']}{e['shape']}"
    if kind == "kind_changed":
        return f"{e['name']}: {e['old']} -> {e['new']} ({format_bytes(e['bytes'])})"
    verb = "offload" if "offload" in kind else "reload"
    return (f"{e['name']}: {format_bytes(e['bytes'])} {e['kind']}, {verb}ed x{e[verb + 's_old']} -> "
            f"x{e[verb + 's_new']} ({format_bytes(e['old_bytes'])} -> {format_bytes(e['new_bytes'])} copied)")


def _headline(d: PlanDiff) -> str:
    if not d.changed:
        return "no change: the plans are semantically identical" + (" (byte-identical)" if d.identical_bytes else "")
    n = len(d.changed_metrics())
    t = sum(len(v) for v in d.tensors.values())
    msg = f"{n} metric{'s' if n != 1 else ''} changed, {t} tensor change{'s' if t != 1 else ''}"
    if d.crossed:
        msg += "; THRESHOLD CROSSED: " + ", ".join(f"--{t['name']} {t['limit']}" for t in d.crossed)
    elif d.thresholds:
        msg += "; within thresholds"
    return msg


def render_text(d: PlanDiff, old_label: str = "old", new_label: str = "new", top: int = 10, console: Any = None) -> None:
    """Print the diff as rich tables (plain text when not a terminal)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    con = console or Console(highlight=False)
    con.print(f"[bold]turnipc diff[/bold] {old_label} -> {new_label}: {_headline(d)}", soft_wrap=True)
    if d.model or d.options:
        t = Table(title="inputs", title_justify="left", box=box.SIMPLE_HEAD)
        t.add_column("field")
        t.add_column("old", overflow="fold")
        t.add_column("new", overflow="fold")
        for k, v in d.model.items():
            t.add_row(f"model.{k}", str(v["old"]), str(v["new"]))
        for k, v in d.options.items():
            t.add_row(f"options.{k}", str(v["old"]), str(v["new"]))
        con.print(t)
    t = Table(box=box.SIMPLE_HEAD)
    t.add_column("metric")
    t.add_column("old", justify="right")
    t.add_column("new", justify="right")
    t.add_column("change", justify="right")
    t.add_column("%", justify="right")
    for m in d.metrics.values():
        style = "bold" if m.changed else "dim"
        t.add_row(m.name, _fmt_value(m.old, m.unit), _fmt_value(m.new, m.unit), _fmt_delta(m), _fmt_pct(m), style=style)
    con.print(t)
    for kind in TENSOR_LISTS:
        lst = d.tensors.get(kind, [])
        if not lst:
            continue
        con.print(f"[bold]{kind.replace('_', ' ')}[/bold] ({len(lst)}):")
        for e in lst[:top]:
            con.print("  " + _tensor_line(kind, e), markup=False)
        if len(lst) > top:
            con.print(f"  ... and {len(lst) - top} more (--top, or --json for all)")
    for th in d.thresholds:
        mark = "[red]CROSSED[/red]" if th["crossed"] else "ok"
        con.print(f"threshold --{th['name']} {th['limit']}: {_fmt_threshold(th)}  {mark}")
    if d.changed and d.sections_changed:
        con.print("plan sections that differ: " + ", ".join(d.sections_changed), markup=False)
    for n in d.notes:
        con.print(f"note: {n}", markup=False)
    if d.not_compared:
        con.print("not compared: " + "; ".join(d.not_compared), markup=False)


def render_markdown(d: PlanDiff, old_label: str = "old", new_label: str = "new", top: int = 10) -> str:
    """A GitHub-flavoured Markdown report, for a pull-request comment."""
    icon = {EXIT_SAME: ":white_check_mark:", EXIT_CHANGED: ":information_source:", EXIT_THRESHOLD: ":x:"}[d.exit_code]
    out = [f"### {icon} turnipc diff: {_headline(d)}", "", f"`{old_label}` → `{new_label}`", ""]
    if d.model or d.options:
        out += ["| input | old | new |", "| --- | --- | --- |"]
        for k, v in d.model.items():
            out.append(f"| model.{k} | `{_md(v['old'])}` | `{_md(v['new'])}` |")
        for k, v in d.options.items():
            out.append(f"| options.{k} | `{_md(v['old'])}` | `{_md(v['new'])}` |")
        out.append("")
    out += ["| metric | old | new | change | % |", "| --- | ---: | ---: | ---: | ---: |"]
    for m in d.metrics.values():
        name = f"**{m.name}**" if m.changed else m.name
        out.append(f"| {name} | {_fmt_value(m.old, m.unit)} | {_fmt_value(m.new, m.unit)} | {_fmt_delta(m)} | {_fmt_pct(m)} |")
    if d.thresholds:
        out += ["", "| threshold | limit | value | result |", "| --- | ---: | ---: | --- |"]
        for th in d.thresholds:
            res = ":x: crossed" if th["crossed"] else ("n/a" if th["value"] is None else ":white_check_mark: ok")
            out.append(f"| --{th['name']} | {th['limit']} | {_fmt_threshold(th)} | {res} |")
    for kind in TENSOR_LISTS:
        lst = d.tensors.get(kind, [])
        if not lst:
            continue
        out += ["", f"<details><summary>{kind.replace('_', ' ')} tensors ({len(lst)})</summary>", ""]
        out += [f"- `{_md(_tensor_line(kind, e))}`" for e in lst[:top]]
        if len(lst) > top:
            out.append(f"- ... and {len(lst) - top} more")
        out += ["", "</details>"]
    if d.notes or d.not_compared:
        out.append("")
        out += [f"> note: {_md(n)}" for n in d.notes]
        if d.not_compared:
            out.append(f"> not compared: {_md('; '.join(d.not_compared))}")
    return "\n".join(out) + "\n"


def _md(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("`", "'")
