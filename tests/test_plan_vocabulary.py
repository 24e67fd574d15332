"""The plan's typed vocabulary: enums encode as the plain strings, PlanStats round-trips, lenient reads."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from turnip.plan import (
    FORMAT_NAME,
    Loc,
    Memory,
    MemoryKind,
    Node,
    NodeKind,
    Placement,
    Plan,
    PlanFormatError,
    PlanStats,
    TensorInfo,
    TensorKind,
    decode_plan,
    encode_plan,
    read_plan_lenient,
)


def tiny_plan(stats: PlanStats | None = None) -> Plan:
    t = TensorInfo("x", "float32", (4,), 16, TensorKind.INPUT, 0)
    y = TensorInfo("y", "float32", (4,), 16, TensorKind.OUTPUT, 1)
    mems = [Memory(0, MemoryKind.GPU, 0, 256, 1024), Memory(1, MemoryKind.HOST, -1, 0, 0)]
    node = Node(0, NodeKind.COMPUTE, 0, (), (Loc(0, 0, 0),), (Loc(0, 256, 1),), op="Relu", name="r")
    return Plan("m.onnx", "0" * 64, {"": 17}, {}, [t, y], mems, [Placement(0, Loc(0, 0, 0), TensorKind.INPUT)], [node], [0],
                [Loc(0, 256, 1)], stats=stats or PlanStats())


def test_enums_encode_exactly_as_the_bare_strings():
    typed = tiny_plan()
    bare = {"kind": "compute"}
    assert msgpack.packb(typed.nodes[0].kind) == msgpack.packb("compute")
    assert typed.nodes[0].kind == "compute" and f"{typed.nodes[0].kind}" == "compute" and str(TensorKind.INPUT) == "input"
    # built from bare strings (older callers, tests): coerced to the enums, same bytes
    loose = dataclasses.replace(typed, nodes=[dataclasses.replace(typed.nodes[0], kind=bare["kind"])])
    assert loose.nodes[0].kind is NodeKind.COMPUTE
    assert encode_plan(loose) == encode_plan(typed)
    back = decode_plan(encode_plan(typed))
    assert back.nodes[0].kind is NodeKind.COMPUTE and back.tensors[1].kind is TensorKind.OUTPUT
    assert back.memories[1].kind is MemoryKind.HOST and back.placements[0].source is TensorKind.INPUT


def test_unknown_kind_is_a_plan_format_error_naming_the_field():
    o = tiny_plan().to_obj()
    o["nodes"][0]["kind"] = "teleport"
    with pytest.raises(PlanFormatError, match=r"node 0 kind is 'teleport', not one of compute, reload, offload, move"):
        decode_plan(msgpack.packb(o, use_bin_type=True))
    with pytest.raises(PlanFormatError, match="tensor 'x' kind"):
        TensorInfo("x", "float32", (1,), 4, "weights", 0)


def test_stats_round_trip_with_absent_and_unknown_keys():
    s = PlanStats(peak_bytes=256, nodes={"compute": 1, "reload": 0, "offload": 0, "move": 0}, extra={"future_stat": [1, 2]})
    assert s.to_obj() == {"future_stat": [1, 2], "peak_bytes": 256, "nodes": {"compute": 1, "reload": 0, "offload": 0, "move": 0}}
    back = decode_plan(encode_plan(tiny_plan(s))).stats
    assert back == s and back.budget_bytes is None and back.transfer_bytes(NodeKind.RELOAD) is None
    assert tiny_plan().to_obj()["stats"] == {}  # nothing recorded, nothing written


def test_lenient_read_of_another_version_keeps_what_parses(tmp_path):
    o = tiny_plan(PlanStats(peak_bytes=256)).to_obj()
    o["version"] = 99
    o["nodes"] = [{"a node": "of a format this reader does not know"}]
    p = tmp_path / "v99.plan"
    p.write_bytes(msgpack.packb(o, use_bin_type=True))
    plan = read_plan_lenient(p)
    assert plan.version == 99 and plan.unread == ("nodes",) and plan.nodes == []
    assert plan.stats.peak_bytes == 256 and [t.name for t in plan.tensors] == ["x", "y"]
    with pytest.raises(PlanFormatError, match="re-plan"):
        decode_plan(p.read_bytes())  # the strict reader refuses it


@pytest.mark.parametrize("data, match", [(b"\xc1", "not valid msgpack"), (msgpack.packb({"format": "other"}), "not a Turnip plan"),
                                         (msgpack.packb({"format": FORMAT_NAME, "version": "1"}), "no integer format version")])
def test_lenient_read_refuses_what_is_not_a_plan(tmp_path, data, match):
    p = tmp_path / "bad.plan"
    p.write_bytes(data)
    with pytest.raises(PlanFormatError, match=match):
        read_plan_lenient(p)
