"""Read an ONNX model's structure without reading its inline weight bytes.

WHY: ``onnx.load`` parses the whole protobuf, so a model whose weights are
stored inline (legacy exports, ``raw_data`` in the ``.onnx`` file itself)
costs its full weight size in RAM just to be opened (1.3-1.9 GiB for the
legacy BERT/GPT-2 exports), although planning never needs the bytes and the
runtime copies them straight into its memories.

An inline ``raw_data`` is one contiguous byte range of the model file. So this
module walks the protobuf wire format of the file (memory-mapped; only the
field headers are touched), cuts the ``raw_data`` of every graph initializer
of at least ``min_bytes`` out, and describes it instead as *external data
that lives in the model file itself* (``location`` = the model's file name,
``offset``/``length`` = the byte range). Everything else is parsed by
protobuf as usual. The result is an ordinary ``ModelProto`` that the planner
and the runtime's external-data path handle unchanged.

Only graph initializers (ModelProto.graph = field 7, GraphProto.initializer =
field 5, TensorProto.raw_data = field 9) are rewritten; initializers in
functions or subgraphs stay inline.
"""

from __future__ import annotations

import mmap
import os
from typing import Iterator

import onnx

# protobuf field numbers (onnx.proto)
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_RAW_DATA = 9
_LEN = 2  # wire type: length-delimited


def _varint(buf: mmap.mmap | bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _fields(buf: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, value start, field end) of each field in buf[start:end]."""
    pos = start
    while pos < end:
        fstart = pos
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            _, pos = _varint(buf, pos)
            vstart = pos
        elif wt == 1:
            vstart, pos = pos, pos + 8
        elif wt == 5:
            vstart, pos = pos, pos + 4
        elif wt == _LEN:
            n, vstart = _varint(buf, pos)
            pos = vstart + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        if pos > end:
            raise ValueError("truncated protobuf field")
        yield num, wt, fstart, vstart, pos


def load_model_lazily(path: str, min_bytes: int = 4096) -> onnx.ModelProto:
    """The model at ``path``, with inline initializer bytes of >= ``min_bytes`` left in the file (see module doc).

    External-data initializers are left as they are (not loaded either).
    Raises what ``ModelProto.ParseFromString`` raises on a malformed file.
    """
    location = os.path.basename(path)
    size = os.path.getsize(path)
    model = onnx.ModelProto()
    if size == 0:
        model.ParseFromString(b"")
        return model
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        rest = bytearray()
        graph = onnx.GraphProto()
        has_graph = False
        for num, wt, fs, vs, fe in _fields(buf, 0, size):
            if num != _MODEL_GRAPH or wt != _LEN:
                rest += buf[fs:fe]
                continue
            has_graph = True
            g_rest = bytearray()
            inits = []
            for gnum, gwt, gfs, gvs, gfe in _fields(buf, vs, fe):
                if gnum != _GRAPH_INITIALIZER or gwt != _LEN:
                    g_rest += buf[gfs:gfe]
                    continue
                t_rest = bytearray()
                span = None
                for tnum, twt, tfs, tvs, tfe in _fields(buf, gvs, gfe):
                    if tnum == _TENSOR_RAW_DATA and twt == _LEN and tfe - tvs >= min_bytes:
                        span = (tvs, tfe - tvs)
                    else:
                        t_rest += buf[tfs:tfe]
                t = onnx.TensorProto()
                t.ParseFromString(bytes(t_rest))
                if span is not None:
                    t.data_location = onnx.TensorProto.EXTERNAL
                    del t.external_data[:]
                    for k, v in (("location", location), ("offset", str(span[0])), ("length", str(span[1]))):
                        e = t.external_data.add()
                        e.key, e.value = k, v
                inits.append(t)
            part = onnx.GraphProto()
            part.ParseFromString(bytes(g_rest))
            part.initializer.extend(inits)
            graph.MergeFrom(part)
        model.ParseFromString(bytes(rest))
        if has_graph:
            model.graph.CopyFrom(graph)
    return model
