"""Hand-built TaskGraphs small enough to work out every event, occupant and dependency by hand.

Sizes are multiples of the 256-byte alignment, so an element count of 64
float32 is exactly one aligned unit (``U``) and budgets read as "so many units".
"""

from __future__ import annotations

from turnipc.taskgraph import Task, TaskGraph, Value

U = 256  # bytes: one aligned unit


def value(name: str, units: int, kind: str = "activation") -> Value:
    return Value(name, "float32", (units * U // 4,), units * U, kind, name)


def task(tid: int, ins: tuple[str, ...], outs: tuple[str, ...], flops: int = 0, touched: int = 0) -> Task:
    return Task(tid, f"t{tid}", "Add" if len(ins) > 1 else "Relu", "", {}, ins, outs, flops, touched)


def graph(values: list[Value], tasks: list[Task], inputs: list[str], outputs: list[str]) -> TaskGraph:
    return TaskGraph("tiny.onnx", "0" * 64, {"": 17}, {v.name: v for v in values}, tasks, inputs, outputs)


def skip_chain() -> TaskGraph:
    """x -> a -> b -> c (2 units) -> d; y = d + a. ``a`` is live across three steps.

    Working sets: t0 {x,a} 2U, t1 {a,b} 2U, t2 {b,c} 3U, t3 {c,d} 3U, t4 {d,a,y} 3U.
    At a budget of 3U, ``a`` cannot stay through steps 2 and 3: it is offloaded
    (it is dirty: no host copy) and reloaded for t4.
    """
    vals = [value("x", 1, "input"), value("a", 1), value("b", 1), value("c", 2), value("d", 1), value("y", 1, "output")]
    tasks = [task(0, ("x",), ("a",)), task(1, ("a",), ("b",)), task(2, ("b",), ("c",)), task(3, ("c",), ("d",)),
             task(4, ("d", "a"), ("y",))]
    return graph(vals, tasks, ["x"], ["y"])


def weight_reuse() -> TaskGraph:
    """A 4-unit weight W read by the first and the last task; at 6U it must leave in between.

    Working sets: t0 {x,W,a} 6U, t1 {a,b} 2U, t2 {b,c} 2U, t3 {c,a,d} 3U, t4 {d,W,y} 6U.
    W is clean (the model file holds it), so leaving costs no offload: it is
    dropped and reloaded.
    """
    vals = [value("x", 1, "input"), value("W", 4, "weight"), value("a", 1), value("b", 1), value("c", 1), value("d", 1),
            value("y", 1, "output")]
    tasks = [task(0, ("x", "W"), ("a",)), task(1, ("a",), ("b",)), task(2, ("b",), ("c",)), task(3, ("c", "a"), ("d",)),
             task(4, ("d", "W"), ("y",))]
    return graph(vals, tasks, ["x"], ["y"])


def two_stage() -> TaskGraph:
    """a = f(x) on one GPU, y = g(a) on the other: one move of ``a``."""
    vals = [value("x", 1, "input"), value("a", 1), value("y", 1, "output")]
    return graph(vals, [task(0, ("x",), ("a",)), task(1, ("a",), ("y",))], ["x"], ["y"])
