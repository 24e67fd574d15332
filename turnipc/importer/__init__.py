"""ONNX model -> TASKGRAPH, as a pipeline of named steps.

:func:`import_model` reads the model *structure only* (external weight data
is never opened; inline weights are parsed with the protobuf but their values
are not used) and returns a :class:`~turnipc.taskgraph.TaskGraph` in which
every value has a static shape and a known dtype. Each step is a module with
one job, and says why it exists:

=========  ==========================  =================================================
step       module                      what it does
=========  ==========================  =================================================
read       :mod:`.read`                parse the file (weights left in it), hash it,
                                       inline local functions, refuse control flow
weights    :mod:`.weights`             initializer metadata; small inline ones as arrays
bind       :mod:`.bind`                the user's inputs with every dynamic dim bound;
                                       graph outputs checked
rewrite    :mod:`.rewrite`             the inference model: unique node names, typed
                                       inputs, only small initializers kept
fold       :mod:`turnipc.folding`      shape inference and constant folding to a fixpoint
derive     :mod:`.derive`              weight-only Transpose / Cast chains become derived
                                       weights (made once at load by the runtime)
alias      :mod:`.alias`               view ops become zero-copy aliases of a storage
tasks      :mod:`.tasks`               supported ops; each task's inputs and outputs
values     :mod:`.values`              kind, dtype, static shape and storage of each value
=========  ==========================  =================================================

(``tasks`` runs in two parts around ``values``: the task's inputs and
outputs are needed to know which values exist, and the cost estimate needs
the values.)
"""

from __future__ import annotations

from .. import folding
from ..taskgraph import TaskGraph
from .alias import ALIAS_OPS, count_uses, is_alias, resolve_aliases
from .bind import bind_inputs, graph_outputs
from .derive import derive_weights
from .read import inline_functions, opsets, read_model, reject_structure
from .rewrite import make_inference_model
from .tasks import build_tasks, check_supported, task_io
from .values import Kinds, build_values, check_static
from .weights import collect_weights, small_int_weights

__all__ = ["ALIAS_OPS", "import_model"]


def import_model(
    path: str,
    dims: dict[str, int] | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    supported_ops: set[tuple[str, str]] | None = None,
) -> TaskGraph:
    """Read ``path`` and return its TASKGRAPH. Raises ModelError / UnboundDimError."""
    # read
    model, sha = read_model(path)
    model = inline_functions(model, path)
    ops = opsets(model)
    reject_structure(model, path)
    g = model.graph
    # weights, bind
    weights = collect_weights(g)
    bound = bind_inputs(g, weights.meta, dict(dims or {}), dict(input_shapes or {}))
    outputs = graph_outputs(g, weights.meta, bound.shapes, path)
    output_set = set(outputs)
    # rewrite, fold
    make_inference_model(model, bound, weights)
    res = folding.fold_to_fixpoint(model, weights.consts, ops, output_set)
    types = res.types
    # derive: views are judged with the folded graph's uses (a view's uses do not change here)
    fold_uses = count_uses(res.nodes, outputs)
    nodes, derived = derive_weights(res.nodes, weights.meta, types, output_set, lambda n: is_alias(n, fold_uses, res.constants, types))
    # alias
    kinds = Kinds(bound.shapes, weights.meta, derived, res.folded)
    uses = count_uses(nodes, outputs)
    aliases = resolve_aliases(nodes, lambda n: is_alias(n, uses, res.constants, types), output_set, kinds.root_kind)
    kinds.storage, kinds.claimed = aliases.storage, aliases.claimed
    # tasks (inputs and outputs), values, tasks (built)
    check_supported(aliases.nodes, supported_ops)
    task_inputs, task_outputs = task_io(aliases.nodes, uses, ops)
    check_static(task_inputs, task_outputs, outputs, types, res, path, model)
    values, constants = build_values(kinds, bound, res, task_inputs, task_outputs, outputs)
    tasks = build_tasks(aliases.nodes, task_inputs, task_outputs, values)
    return TaskGraph(
        model_path=path,
        model_sha256=sha,
        opset=ops,
        values=values,
        tasks=tasks,
        inputs=bound.input_names,
        outputs=outputs,
        constants=constants,
        dims=bound.dims,
        derived={k: r for k, r in derived.items() if k in values},
        small_ints=small_int_weights(weights.consts, values),
    )
