"""Plans built by hand, without the compiler, shared by tests and benchmarks.

``tests/test_executor.py`` runs them for exact results and ``bench/bench_executor.py``
times them (the executor's per-node overhead), so both measure the same plan.
"""

from __future__ import annotations

from turnip.plan import Loc, Memory, Node, Placement, Plan, TensorInfo

SLOT = 256  # arena slot: offsets are multiples of 256 (the runtime checks alignment)


def make_identity_chain(n: int) -> Plan:
    """n Identity nodes on a 1-element tensor, ping-ponging between two arena slots.

    Node i reads slot i % 2 and writes slot (i + 1) % 2: each node depends on the
    previous one (data, and WAR on the slot it overwrites).
    """
    tensors = [
        TensorInfo(f"t{i}", "float32", (1,), 4, "input" if i == 0 else ("output" if i == n else "activation"), i) for i in range(n + 1)
    ]
    nodes = [
        Node(
            i,
            "compute",
            0,
            (i - 1,) if i else (),
            (Loc(0, SLOT * (i % 2), i),),
            (Loc(0, SLOT * ((i + 1) % 2), i + 1),),
            op="Identity",
            name=f"id{i}",
            pos=i,
        )
        for i in range(n)
    ]
    return Plan(
        model_path="/nonexistent/model.onnx",
        model_sha256="",
        opset={"": 17},
        options={},
        tensors=tensors,
        memories=[Memory(0, "gpu", 0, SLOT + 4, SLOT + 4)],
        placements=[Placement(0, Loc(0, 0, 0), "input")],
        nodes=nodes,
        inputs=[0],
        outputs=[Loc(0, SLOT * (n % 2), n)],
    )
