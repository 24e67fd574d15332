"""The arena alignment is a plan field: written by the compiler, read back, checked by the plan check.

Plans written before the field existed carry no ``alignment`` key and must
read as 256 (the format's rule for added fields, docs/plan-format.md).
"""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hand_plans import SLOT, make_identity_chain
from tiny_graphs import U, skip_chain
from turnip.errors import PlanCheckError, PlanFormatError
from turnip.plan import DEFAULT_ALIGNMENT, aligned_size, decode_plan, encode_plan, read_plan_lenient
from turnip.plancheck import MIN_ALIGNMENT, check_plan

from turnipc.planner import PlanOptions, build_plan
from turnipc.units import Budget


def test_aligned_size_rounds_up_to_the_alignment():
    assert [aligned_size(n) for n in (0, 1, 256, 257)] == [0, 256, 256, 512]
    assert [aligned_size(n, 1024) for n in (0, 1, 1024, 1025)] == [0, 1024, 1024, 2048]


def test_alignment_is_written_and_read_back():
    plan = dataclasses.replace(make_identity_chain(3), alignment=4096)
    obj = msgpack.unpackb(encode_plan(plan), raw=False)
    assert obj["alignment"] == 4096
    assert decode_plan(encode_plan(plan)).alignment == 4096


def test_a_plan_without_the_field_reads_as_256(tmp_path):
    obj = msgpack.unpackb(encode_plan(make_identity_chain(3)), raw=False)
    del obj["alignment"]  # what every plan written before the field looks like
    data = msgpack.packb(obj, use_bin_type=True)
    assert DEFAULT_ALIGNMENT == 256 and decode_plan(data).alignment == 256
    path = tmp_path / "old.plan"
    path.write_bytes(data)
    assert read_plan_lenient(path).alignment == 256
    obj["version"] = 99  # another version, read section by section for diff: the alignment too
    obj["alignment"] = 512
    path.write_bytes(msgpack.packb(obj, use_bin_type=True))
    assert read_plan_lenient(path).alignment == 512


@pytest.mark.parametrize("bad, why", [(300, "not a power of two"), (0, r"outside \[1,"), ("256", "not an integer")])
def test_a_malformed_alignment_is_refused_on_reading(bad, why):
    obj = msgpack.unpackb(encode_plan(make_identity_chain(3)), raw=False)
    obj["alignment"] = bad
    with pytest.raises(PlanFormatError, match=f"alignment.*{why}"):
        decode_plan(msgpack.packb(obj, use_bin_type=True))


def test_the_check_uses_the_recorded_alignment():
    plan = make_identity_chain(3)  # slots at offsets 0 and 256
    assert plan.alignment == 256 and check_plan(plan).nodes == 3
    coarse = dataclasses.replace(plan, alignment=2 * SLOT)  # offset 256 is not a multiple of 512
    with pytest.raises(PlanCheckError, match=r"offset 256 of memory 0 is not a multiple of the plan's alignment 512"):
        check_plan(coarse)
    fine = dataclasses.replace(plan, alignment=MIN_ALIGNMENT // 2)  # below what the runtime's buffers give
    with pytest.raises(PlanCheckError, match=r"alignment is 128 bytes; the runtime needs a power of two of at least 256"):
        check_plan(fine)


def test_the_compiler_records_its_alignment_and_keeps_to_it():
    plan = build_plan(skip_chain(), PlanOptions(Budget(bytes=3 * U)))
    assert plan.alignment == 256
    locs = [loc for n in plan.nodes for loc in (*n.inputs, *n.outputs) if loc is not None]
    locs += [p.loc for p in plan.placements] + list(plan.outputs)
    assert locs and all(loc.offset % plan.alignment == 0 for loc in locs)
    assert plan.stats.offload_bytes == U  # the budget really forces the offload/reload path through the layout
    check_plan(plan)
