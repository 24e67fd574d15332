"""`turnipc diff`: a semantic comparison of two plan files, for code review and CI.

It compares what a plan *means*, not its bytes: the model and options it was
made from, the summary numbers (peak, budget, bounds, bytes moved, node
counts, a simulated makespan) and the tensors (matched by ONNX name: added,
removed, resized, newly offloaded or reloaded...). Thresholds turn it into a
regression gate:

    exit 0  no change: the plans are semantically identical
    exit 1  changes, all within the thresholds given
    exit 2  a threshold was crossed
    exit 3  an input is unreadable (missing file, not a plan, truncated)

Plans of two different format versions are compared on what both have; every
field is read defensively (``plan.stats`` may lack a key, a section may not
parse) and what could not be compared is listed in ``PlanDiff.not_compared``.

Layout of the package (data flows one way):

* ``reading``: plans read leniently (the decoding itself is ``turnip.plan.read_plan_lenient``)
* ``metrics``: the compared numbers, and thresholds on them
* ``compare``: :func:`diff_plans` -> :class:`PlanDiff`
* ``render``: text and Markdown; ``command``: the click command
"""

from __future__ import annotations

from .command import diff_cmd
from .compare import EXIT_CHANGED, EXIT_SAME, EXIT_THRESHOLD, EXIT_UNREADABLE, TENSOR_LISTS, PlanDiff, check_thresholds, diff_plans
from .metrics import METRICS, THRESHOLD_METRICS, MetricDiff, Threshold, parse_threshold, simulated_makespan
from .reading import UnreadablePlan, read_plan_lenient
from .render import render_markdown, render_text

__all__ = [
    "EXIT_CHANGED", "EXIT_SAME", "EXIT_THRESHOLD", "EXIT_UNREADABLE", "METRICS", "THRESHOLD_METRICS", "TENSOR_LISTS",
    "MetricDiff", "PlanDiff", "Threshold", "UnreadablePlan", "check_thresholds", "diff_cmd", "diff_plans", "parse_threshold",
    "read_plan_lenient", "render_markdown", "render_text", "simulated_makespan",
]
