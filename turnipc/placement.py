"""Placement of tasks on GPUs: contiguous stages of the planned order, balanced by estimated cost.

Simple on purpose (pipeline-style stages): a value crosses a stage boundary
once, as a move node, so traffic between GPUs stays small.
"""

from __future__ import annotations

from .taskgraph import TaskGraph


def place_stages(graph: TaskGraph, order: list[int], gpus: int) -> list[int]:
    """task id -> device. Cost is FLOPs plus bytes touched (so memory-bound ops count too)."""
    device_of = [0] * len(graph.tasks)
    if gpus <= 1 or not order:
        return device_of
    cost = [graph.tasks[t].flops + graph.tasks[t].bytes_touched for t in order]
    total = sum(cost) or 1
    acc = 0
    for i, t in enumerate(order):
        # device by the midpoint of this task's cost share
        d = min(gpus - 1, int((acc + cost[i] / 2) * gpus / total))
        device_of[t] = d
        acc += cost[i]
    return device_of
