"""Memory plots of a plan (`turnipc inspect --plot memory.png --html memory.html`).

Everything is reconstructed from the plan file alone (nothing from the
planner): walking the nodes in their planned serial order (``pos``), every
GPU location ``(memory, offset, storage)`` written by a node, or placed
before the run, is one *occupant*; it is live from its write until its last
read before the next write to that location (or to the end of the run, for
a graph output). That is the same lifetime the planner laid out, so the
largest total is the plan's ``max_live_bytes_per_device``.

Time follows the planner's convention: position ``-1`` is "before the first
node" (placements), and node ``p`` runs at position ``p``.
"""

from __future__ import annotations

import html as _html
import json
from typing import Any, Callable, Literal

import numpy as np
from turnip.plan import COMPUTE, GPU, Loc, NodeKind, Plan, TensorKind, aligned_size

from .units import format_bytes

#: Stack order (bottom to top) and colours.
KINDS = ("weights", "reloaded", "activations")
COLORS = {"weights": "#8da0cb", "activations": "#66c2a5", "reloaded": "#fc8d62",
          "reload": "#e6550d", "offload": "#3182bd", "move": "#756bb1",
          "budget": "#d62728", "lower_bound": "#444444", "no_offload_peak": "#7f7f7f", "arena": "#2ca02c"}
KIND_LABELS = {"weights": "weights, inputs, constants", "activations": "activations", "reloaded": "reloaded (arrived by a reload)"}
_KIND_OF_TENSOR = {TensorKind.WEIGHT: "weights", TensorKind.INPUT: "weights", TensorKind.CONSTANT: "weights",
                   TensorKind.ACTIVATION: "activations", TensorKind.OUTPUT: "activations"}


def memory_series(plan: Plan) -> dict[str, Any]:
    """The data the memory plot shows, per GPU.

    Returns ``{"x": positions (-1 .. last node pos), "labels": what runs at each x,
    "devices": [per GPU: {"device", "weights", "activations", "reloaded", "total",
    "reload", "offload", "move_in", "move_out", "budget", "arena", "max_live",
    "lower_bound", "no_offload_peak"}]}``. Byte series are int64 arrays over x:
    resident bytes by kind (``reloaded`` = bytes on the GPU that arrived by a
    reload, whatever their tensor kind; inputs and constants count as weights;
    bytes arriving by a move count by their tensor kind), and transfer bytes
    started at each position (``move_in``: moves into this GPU, ``move_out``:
    moves out of it).
    """
    gpus = {m.id: m for m in plan.memories if m.kind == GPU}
    nodes = sorted(plan.nodes, key=lambda n: (n.pos, n.id))
    npos = (max(n.pos for n in nodes) + 1) if nodes else 0
    T = npos + 1  # time t = pos + 1; t = 0 is before the first node
    tensors = plan.tensors

    def storage(loc: Loc) -> int:
        return tensors[loc.tensor].storage

    # occupants: [mem, kind, size, lower, last]; live over [lower, last + 1)
    occs: list[list[Any]] = []
    current: dict[tuple[int, int, int], int] = {}

    def write(loc: Loc, t: int, kind: str) -> None:
        s = storage(loc)
        current[(loc.mem, loc.offset, s)] = len(occs)
        occs.append([loc.mem, kind, aligned_size(tensors[s].nbytes, plan.alignment), t, t])

    def touch(loc: Loc, t: int) -> None:
        k = (loc.mem, loc.offset, storage(loc))
        i = current.get(k)
        if i is None:  # read of bytes nobody wrote: `turnipc verify` reports it; count it from the start
            write(loc, 0, _KIND_OF_TENSOR.get(tensors[k[2]].kind, "activations"))
            i = current[k]
        occs[i][4] = max(occs[i][4], t)

    for p in plan.placements:
        if p.loc.mem in gpus:
            write(p.loc, 0, _KIND_OF_TENSOR.get(tensors[storage(p.loc)].kind, "weights"))
    traffic = {m: {k: np.zeros(T, dtype=np.int64) for k in ("reload", "offload", "move_in", "move_out")} for m in gpus}
    labels = ["before the first node (placements)"] + [""] * npos
    for n in nodes:
        t = n.pos + 1
        # transfers: name them by tensor (plan files do not keep transfer nodes' names)
        labels[t] = f"{n.op} {n.name}".strip() if n.kind == COMPUTE else f"{n.kind} {tensors[n.dst.tensor].name}"
        for loc in n.inputs:
            if loc is not None and loc.mem in gpus:
                touch(loc, t)
        for loc in n.outputs:
            if loc is not None and loc.mem in gpus:
                kind = "reloaded" if n.kind == NodeKind.RELOAD else _KIND_OF_TENSOR.get(tensors[storage(loc)].kind, "activations")
                write(loc, t, kind)
        if n.kind == NodeKind.RELOAD and n.dst.mem in gpus:
            traffic[n.dst.mem]["reload"][t] += n.bytes
        elif n.kind == NodeKind.OFFLOAD and n.src.mem in gpus:
            traffic[n.src.mem]["offload"][t] += n.bytes
        elif n.kind == NodeKind.MOVE:
            if n.dst.mem in gpus:
                traffic[n.dst.mem]["move_in"][t] += n.bytes
            if n.src.mem in gpus:
                traffic[n.src.mem]["move_out"][t] += n.bytes
    for loc in plan.outputs:  # graph outputs stay to the end of the run
        if loc.mem in gpus:
            touch(loc, T - 1)

    diff = {m: {k: np.zeros(T + 1, dtype=np.int64) for k in KINDS} for m in gpus}
    for mem, kind, size, lower, last in occs:
        diff[mem][kind][lower] += size
        diff[mem][kind][last + 1] -= size

    s = plan.stats
    max_live = s.max_live_bytes_per_device or []
    devices = []
    for mem_id, m in sorted(gpus.items(), key=lambda kv: kv[1].device):
        series = {k: np.cumsum(diff[mem_id][k])[:T] for k in KINDS}
        total = sum(series.values())
        devices.append({
            "device": m.device, **series, "total": total, **traffic[mem_id],
            "budget": m.budget, "arena": m.size,
            "max_live": max_live[m.device] if m.device < len(max_live) else None,
            "lower_bound": s.lower_bound_bytes, "no_offload_peak": s.no_offload_peak_bytes,
        })
    return {"x": np.arange(-1, npos), "labels": labels, "devices": devices}


# ---------------------------------------------------------------------------
# PNG (matplotlib)


def _unit(n: float) -> tuple[float, str]:
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= 2 * f:
            return float(f), unit
    return 1.0, "B"


def plot_memory(plan: Plan, path_png: str, title: str | None = None, dpi: int = 130) -> dict[str, Any]:
    """Write the memory plot of ``plan`` to ``path_png``; returns :func:`memory_series` (the data plotted)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    data = memory_series(plan)
    x = data["x"]
    devs = data["devices"]
    nd = max(1, len(devs))
    fig = Figure(figsize=(11, 4.6 * nd + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(2 * nd, 1, height_ratios=[3, 1.15] * nd)
    title = title or f"{plan.model_path}: GPU memory over the planned order"
    fig.suptitle(title, fontsize=11)
    # step="post" draws value i over [x_i, x_i + 1): repeat the last value so the last position has width
    xs = np.append(x, x[-1] + 1) if len(x) else np.array([-1, 0])

    def ext(a: np.ndarray) -> np.ndarray:
        return np.append(a, a[-1]) if len(a) else np.zeros(2)

    for k, dv in enumerate(devs):
        ax = fig.add_subplot(gs[2 * k])
        axt = fig.add_subplot(gs[2 * k + 1], sharex=ax)
        top = max(int(dv["total"].max(initial=0)), dv["budget"] or 0, dv["arena"] or 0, 1)
        f, unit = _unit(top)
        base = np.zeros(len(xs))
        for kind in KINDS:
            y = ext(dv[kind]) / f
            ax.fill_between(xs, base, base + y, step="post", color=COLORS[kind], linewidth=0)
            base = base + y
        ax.step(xs, base, where="post", color="#333333", linewidth=0.6)
        ylim = top * 1.12 / f
        handles: list[Any] = [Patch(color=COLORS[kk], label=KIND_LABELS[kk]) for kk in reversed(KINDS)]  # as stacked
        lines: tuple[tuple[str, str, Literal["--", "-", ":", "-."]], ...] = (
            ("budget", "budget", "--"), ("arena", "arena (peak)", "-"), ("no_offload_peak", "no-offload peak", ":"),
            ("lower_bound", "lower bound", "-."))
        for key, label, style in lines:
            v = dv.get(key)
            if v is None:
                continue
            text = f"{label} {format_bytes(v)}"
            if v / f > ylim:  # e.g. the no-offload peak at a 25% budget: 4x the axis; say so instead of squashing the plot
                handles.append(Line2D([], [], color=COLORS[key], linestyle=style,
                                      label=f"{text}\n  (off scale: {v / max(dv['budget'] or 1, 1):.1f}x budget)"))
                continue
            ax.axhline(v / f, color=COLORS[key], linestyle=style, linewidth=1.3 if key == "budget" else 1.0)
            handles.append(Line2D([], [], color=COLORS[key], linestyle=style, label=text))
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(0, ylim)
        ax.set_ylabel(f"resident ({unit})")
        ax.set_title(f"GPU {dv['device']}: resident bytes by kind (max live {format_bytes(int(dv['total'].max(initial=0)))})",
                     fontsize=10, loc="left")
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelbottom=False)

        up_max = int((dv["reload"] + dv["move_in"]).max(initial=0))
        down_max = int((dv["offload"] + dv["move_out"]).max(initial=0))
        tf, tunit = _unit(max(up_max, down_max, 1))
        w = 0.9 if len(x) < 400 else 1.0
        bars = [("reload (host -> GPU), up", dv["reload"], 0, 1, COLORS["reload"]),
                ("move into this GPU, up", dv["move_in"], dv["reload"], 1, COLORS["move"]),
                ("offload (GPU -> host), down", dv["offload"], 0, -1, COLORS["offload"]),
                ("move out of this GPU, down", dv["move_out"], dv["offload"], -1, "#bcbddc")]
        for label, vals, below, sign, color in bars:
            if vals.any():
                axt.bar(x, sign * vals / tf, bottom=sign * np.asarray(below) / tf, width=w, color=color, label=label, align="edge")
        axt.axhline(0, color="#333333", linewidth=0.6)
        hi, lo = max(up_max, down_max / 4, 1), max(down_max, up_max / 4, 1)  # both directions stay visible
        axt.set_ylim(-lo / tf * 1.15, hi / tf * 1.15)
        axt.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{abs(v):g}"))
        axt.set_ylabel(f"copied ({tunit})")
        axt.set_title(f"GPU {dv['device']}: transfers started at each position "
                      f"(reloaded {format_bytes(int(dv['reload'].sum()))} up, offloaded {format_bytes(int(dv['offload'].sum()))} down)",
                      fontsize=9, loc="left")
        if axt.get_legend_handles_labels()[0]:
            axt.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        else:
            axt.text(0.5, 0.5, "no transfers on this GPU", transform=axt.transAxes, ha="center", va="center", color="#777777")
        axt.grid(axis="y", alpha=0.3)
        axt.set_xlabel("node position in the planned serial order (-1 = before the first node)")
    fig.savefig(path_png, dpi=dpi)
    return data


# ---------------------------------------------------------------------------
# HTML (self-contained: inline data + vanilla JS canvas, no network)


def _series_json(data: dict[str, Any]) -> str:
    def conv(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, np.integer):
            return int(v)
        return v

    # "</" must not appear inside a <script> element
    return json.dumps(conv(data), separators=(",", ":")).replace("</", "<\\/")


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font:13px system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:16px;margin:0 0 8px} h2{font-size:14px;margin:18px 0 4px}
canvas{border:1px solid #ddd;display:block;cursor:crosshair}
.key span{display:inline-block;margin-right:14px} .sw{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
#readout{position:fixed;pointer-events:none;background:#fff;border:1px solid #999;padding:6px 8px;font:12px ui-monospace,monospace;white-space:pre;display:none;box-shadow:0 2px 6px #0003}
</style></head><body>
<h1>__TITLE__</h1>
<div class="key" id="key"></div>
<div id="panels"></div>
<div id="readout"></div>
<script>
const DATA = __DATA__;
const C = __COLORS__;
const KINDS = ["weights","reloaded","activations"];
function fmt(n){const u=["B","KiB","MiB","GiB","TiB"];let i=0;n=+n;while(Math.abs(n)>=1024&&i<u.length-1){n/=1024;i++;}
  return i?n.toPrecision(3)+" "+u[i]:Math.round(n)+" B";}
function niceStep(x){const u=x>=2*2**30?2**30:x>=2*2**20?2**20:x>=2*1024?1024:1, v=x/u, p=10**Math.floor(Math.log10(v)), m=v/p;
  return (m<=1?1:m<=2?2:m<=5?5:10)*p*u;}
const key=document.getElementById("key");
for(const [k,label] of [["activations","activations"],["reloaded","reloaded"],["weights","weights/inputs/constants"],
  ["budget","budget"],["arena","arena (peak)"],["no_offload_peak","no-offload peak"],["lower_bound","lower bound"],
  ["reload","reload (up)"],["offload","offload (down)"],["move","move"]]){
  key.insertAdjacentHTML("beforeend",`<span><i class="sw" style="background:${C[k]}"></i>${label}</span>`);}
const ro=document.getElementById("readout");
const X=DATA.x, N=X.length;
DATA.devices.forEach((d,gi)=>{
  const box=document.createElement("div");
  box.innerHTML=`<h2>GPU ${d.device}</h2>`;
  const cv=document.createElement("canvas"); box.appendChild(cv);
  document.getElementById("panels").appendChild(box);
  const W=Math.max(700,Math.min(1400,window.innerWidth-40)), H1=300, H2=110, GAP=18, L=70, R=12, T=8;
  const dpr=window.devicePixelRatio||1;
  cv.width=W*dpr; cv.height=(T+H1+GAP+H2+22)*dpr; cv.style.width=W+"px"; cv.style.height=(T+H1+GAP+H2+22)+"px";
  const g=cv.getContext("2d"); g.scale(dpr,dpr);
  const lines=[["budget",d.budget,[6,4]],["arena",d.arena,[]],["no_offload_peak",d.no_offload_peak,[2,3]],["lower_bound",d.lower_bound,[8,3,2,3]]];
  let top=Math.max(1,d.budget||0,d.arena||0,...d.total); top*=1.12;
  const px=i=>L+(W-L-R)*i/N, py=v=>T+H1-H1*v/top;
  let base=new Array(N).fill(0);
  for(const k of KINDS){
    g.fillStyle=C[k]; g.beginPath(); g.moveTo(px(0),py(base[0]));
    for(let i=0;i<N;i++){g.lineTo(px(i),py(base[i]+d[k][i]));g.lineTo(px(i+1),py(base[i]+d[k][i]));}
    for(let i=N-1;i>=0;i--){g.lineTo(px(i+1),py(base[i]));g.lineTo(px(i),py(base[i]));}
    g.closePath(); g.fill(); base=base.map((b,i)=>b+d[k][i]);
  }
  g.strokeStyle="#888"; g.strokeRect(L,T,W-L-R,H1);
  g.fillStyle="#333"; g.font="11px sans-serif"; g.textAlign="right";
  const st=niceStep(top/5); for(let v=0;v<=top;v+=st){g.fillText(fmt(v),L-4,py(v)+4);}
  let off=0;
  for(const [k,v,dash] of lines){ if(v==null) continue;
    if(v>top){g.fillStyle=C[k]; g.textAlign="right"; g.fillText(`${k.replace(/_/g,"-")} ${fmt(v)} (off scale, above)`,W-R-4,T+14+13*off++); continue;}
    g.strokeStyle=C[k]; g.setLineDash(dash); g.beginPath(); g.moveTo(L,py(v)); g.lineTo(W-R,py(v)); g.stroke(); g.setLineDash([]);}
  const t0=T+H1+GAP, mid=t0+H2/2;
  const up=d.reload.map((v,i)=>v+d.move_in[i]), dn=d.offload.map((v,i)=>v+d.move_out[i]);
  const tm=Math.max(1,...up,...dn)*1.1, ty=v=>mid-(H2/2)*v/tm;
  g.strokeStyle="#888"; g.strokeRect(L,t0,W-L-R,H2);
  for(let i=0;i<N;i++){const x0=px(i), w=Math.max(1,px(i+1)-px(i)-0.5);
    if(d.reload[i]){g.fillStyle=C.reload; g.fillRect(x0,ty(d.reload[i]),w,ty(0)-ty(d.reload[i]));}
    if(d.move_in[i]){g.fillStyle=C.move; g.fillRect(x0,ty(up[i]),w,ty(d.reload[i])-ty(up[i]));}
    if(d.offload[i]){g.fillStyle=C.offload; g.fillRect(x0,mid,w,ty(-d.offload[i])-mid);}
    if(d.move_out[i]){g.fillStyle=C.move; g.fillRect(x0,ty(-d.offload[i]),w,ty(-dn[i])-ty(-d.offload[i]));}}
  g.strokeStyle="#333"; g.beginPath(); g.moveTo(L,mid); g.lineTo(W-R,mid); g.stroke();
  g.fillStyle="#333"; g.textAlign="right"; g.fillText(fmt(tm)+" up",L-4,t0+10); g.fillText(fmt(tm)+" down",L-4,t0+H2);
  g.textAlign="center"; g.fillText("node position in the planned serial order (-1 = before the first node)",(L+W-R)/2,t0+H2+16);
  cv.addEventListener("mousemove",ev=>{
    const r=cv.getBoundingClientRect(), i=Math.floor((ev.clientX-r.left-L)/(W-L-R)*N);
    if(i<0||i>=N){ro.style.display="none";return;}
    ro.textContent=`GPU ${d.device}  position ${X[i]}\\n${DATA.labels[i]}\\n`+
      `weights     ${fmt(d.weights[i])}\\nactivations ${fmt(d.activations[i])}\\nreloaded    ${fmt(d.reloaded[i])}\\n`+
      `total       ${fmt(d.total[i])}  (budget ${fmt(d.budget)})\\n`+
      `reload ${fmt(d.reload[i])}  offload ${fmt(d.offload[i])}  move in ${fmt(d.move_in[i])} out ${fmt(d.move_out[i])}`;
    ro.style.display="block"; ro.style.left=(ev.clientX+14)+"px"; ro.style.top=(ev.clientY+14)+"px";});
  cv.addEventListener("mouseleave",()=>{ro.style.display="none";});
});
</script></body></html>
"""


def write_memory_html(plan: Plan, path_html: str, title: str | None = None) -> dict[str, Any]:
    """A self-contained interactive version of the memory plot (no CDN, no network); returns the series."""
    data = memory_series(plan)
    title = title or f"{plan.model_path}: GPU memory over the planned order"
    page = (_HTML.replace("__TITLE__", _html.escape(title))
            .replace("__COLORS__", json.dumps(COLORS))
            .replace("__DATA__", _series_json(data)))
    with open(path_html, "w", encoding="utf-8") as f:
        f.write(page)
    return data


def write_plots(plan: Plan, png: str | None = None, html: str | None = None) -> list[str]:
    """Write the PNG and/or HTML memory plot; returns the paths written."""
    out = []
    if png:
        plot_memory(plan, png)
        out.append(png)
    if html:
        write_memory_html(plan, html)
        out.append(html)
    return out


def inspect_plot_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator adding ``--plot PNG`` and ``--html HTML`` to a click command (parameters ``plot_png``, ``plot_html``).

    The command then calls ``write_plots(plan, png=plot_png, html=plot_html)``.
    """
    import click

    f = click.option("--html", "plot_html", type=click.Path(dir_okay=False), default=None,
                     help="Also write an interactive memory plot (self-contained HTML, hover for values).")(f)
    f = click.option("--plot", "plot_png", type=click.Path(dir_okay=False), default=None,
                     help="Also write a memory plot (PNG): resident bytes by kind over the planned order, and transfers.")(f)
    return f
