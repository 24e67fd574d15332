"""Hostile files and faults (issue 15): each numbered defect, as an attacker or a careless user meets it.

1. external weight paths contained in the model's folder, as onnx does it;
2. weight files checked against the size and hash the plan recorded;
3. the runtime refuses, before the first node, a plan `turnipc verify` rejects;
4. one exception root, one line per error, exit codes no finding shares;
5. allocation failures are one line naming the bytes;
6. output writing: only regular files replaced, mode kept, atomic, disk errors reported;
7. an empty model sha256 neither skips the model check nor passes verify.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import click
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from turnip.cli import main as run_main
from turnip.cli_errors import ErrorHandlingCommand, verbose_option
from turnip.errors import (
    ExitCode,
    ModelError,
    OutOfMemoryError,
    OutputError,
    PlanCheckError,
    PlanFormatError,
    TurnipError,
    WeightsError,
)
from turnip.plan import Memory, decode_plan, encode_plan, read_plan, write_plan
from turnip.run import run_plan

from turnipc.cli import main as c_main

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models")
ROOT = os.path.dirname(HERE)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Each test gets its own hash / verified-plan cache."""
    monkeypatch.setenv("TURNIP_CACHE_DIR", str(tmp_path / "turnip-cache"))


def _plan_model(folder, model: str, *extra: str) -> str:
    """Copy a bundled model (and its .data) into ``folder`` and plan it there with the real `turnipc plan`."""
    os.makedirs(folder, exist_ok=True)
    src = os.path.join(MODELS, model)
    shutil.copy(src, folder)
    if os.path.exists(src + ".data"):
        shutil.copy(src + ".data", folder)
    out = os.path.join(folder, "m.plan")
    r = CliRunner().invoke(c_main, ["plan", os.path.join(folder, model), "--gpu-mem", "50%", "-o", out, "-q", *extra])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def mlp_dir(tmp_path_factory):
    """demo_mlp (inline weights), planned once; tests copy the folder."""
    d = tmp_path_factory.mktemp("mlp")
    _plan_model(str(d), "demo_mlp.onnx", "--dim", "batch=8")
    return d


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """gpt2_dynamo18 (external weights in gpt2_dynamo18.onnx.data), planned once."""
    d = tmp_path_factory.mktemp("gpt2")
    _plan_model(str(d), "gpt2_dynamo18.onnx", "--dim", "batch=1", "--dim", "seq=8")
    return d


def _copy(src, tmp_path, name="m") -> str:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return str(dst)


def _run(*args: str):
    return CliRunner().invoke(run_main, list(args))


def _one_error_line(output: str) -> str:
    lines = [x for x in output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


# ---------------------------------------------------------------------------
# 1. external weight paths stay inside the model's folder
# ---------------------------------------------------------------------------
def _point_weights_at(model_path: str, location: str) -> None:
    m = onnx.load(model_path, load_external_data=False)
    for init in m.graph.initializer:
        for e in init.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(m, model_path)


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_external_data_outside_the_model_folder_is_refused(gpt2_dir, tmp_path, how):
    d = _copy(gpt2_dir, tmp_path)
    data = os.path.join(d, "gpt2_dynamo18.onnx.data")
    secret = tmp_path / "secret.bin"  # outside the model's folder: what an attacker wants copied into the output
    shutil.copy(data, secret)
    if how == "absolute":
        loc = str(secret)
    elif how == "dotdot":
        loc = "../secret.bin"
    else:
        os.symlink(str(secret), os.path.join(d, "link.data"))
        loc = "link.data"
    model = os.path.join(d, "gpt2_dynamo18.onnx")
    _point_weights_at(model, loc)
    # re-plan: the planner itself refuses to record such a file
    r = CliRunner().invoke(c_main, ["plan", model, "--gpu-mem", "50%", "--dim", "batch=1", "--dim", "seq=8", "-q", "-o", os.path.join(d, "x.plan")])
    assert r.exit_code == ExitCode.BAD_INPUT and "refused" in _one_error_line(r.output)
    # the old plan, its model hash patched to the crafted model, weights unverified: the runtime refuses to read it
    plan = read_plan(os.path.join(d, "m.plan"))
    from turnip.weights import file_sha256

    plan.model_sha256 = file_sha256(model)
    write_plan(plan, os.path.join(d, "m.plan"))
    with pytest.raises(WeightsError, match="refused"):
        run_plan(os.path.join(d, "m.plan"), backend="numpy", verify_weights=False, feeds=_feeds(plan))
    r = _run(os.path.join(d, "m.plan"), "--random-inputs", "--no-verify-weights")
    assert r.exit_code == ExitCode.BAD_INPUT and "inside the model's folder" in _one_error_line(r.stderr)


def _feeds(plan):
    from turnip.run import random_feeds

    return random_feeds(plan, 0)


# ---------------------------------------------------------------------------
# 2. weight files checked against the plan's record
# ---------------------------------------------------------------------------
def test_plan_records_weight_files(gpt2_dir):
    plan = read_plan(os.path.join(gpt2_dir, "m.plan"))
    (wf,) = plan.weight_files
    data = os.path.join(gpt2_dir, "gpt2_dynamo18.onnx.data")
    assert wf.path == "gpt2_dynamo18.onnx.data" and wf.size == os.path.getsize(data)
    import hashlib

    assert wf.sha256 == hashlib.sha256(open(data, "rb").read()).hexdigest()


def test_flipped_weight_bits_are_refused(gpt2_dir, tmp_path):
    d = _copy(gpt2_dir, tmp_path)
    plan_path = os.path.join(d, "m.plan")
    assert _run(plan_path, "--random-inputs").exit_code == 0
    data = os.path.join(d, "gpt2_dynamo18.onnx.data")
    st = os.stat(data)
    with open(data, "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0x40]))
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime restored
    r = _run(plan_path, "--random-inputs", "--check")
    line = _one_error_line(r.stderr)
    assert r.exit_code == ExitCode.BAD_INPUT and "changed since planning" in line and "--no-verify-weights" in line
    assert _run(plan_path, "--random-inputs", "--no-verify-weights").exit_code == 0  # for people who know


def test_file_hashes_are_cached_across_runs(mlp_dir, tmp_path):
    """Inline-weight models are hashed once per file state, not on every run."""
    from turnip import cache
    from turnip.weights import file_sha256

    d = _copy(mlp_dir, tmp_path)
    model = os.path.join(d, "demo_mlp.onnx")
    h = file_sha256(model)
    st = os.stat(model)
    assert cache.cached_file_hash(st) == h
    # the next process finds it on disk: prove it is not re-hashed by planting a different value
    cache.remember_file_hash(st, "0" * 64)
    code = f"from turnip.weights import file_sha256; print(file_sha256({model!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), check=True).stdout
    assert out.strip() == "0" * 64
    os.utime(model)  # a touched file is hashed again
    assert file_sha256(model) == h


# ---------------------------------------------------------------------------
# 3. the runtime checks the plan as verify does, before the first node
# ---------------------------------------------------------------------------
def _unsafe_variants(plan):
    """(what, mutated plan) that verify rejects."""
    from turnipc.verify import VerifyError, verify_plan

    out = []
    for i, n in enumerate(plan.nodes):  # a dropped dependency that matters
        for k in range(len(n.deps)):
            p = decode_plan(encode_plan(plan))
            p.nodes[i] = replace(n, deps=n.deps[:k] + n.deps[k + 1 :])
            try:
                verify_plan(p)
            except VerifyError:
                out.append(("dropped dependency", p))
                break
        if out:
            break
    p = decode_plan(encode_plan(plan))
    j = next(i for i, n in enumerate(p.nodes) if n.kind == "compute" and n.outputs[0] is not None)
    o = p.nodes[j].outputs[0]
    p.nodes[j] = replace(p.nodes[j], outputs=(replace(o, offset=o.offset + 4),) + p.nodes[j].outputs[1:])
    out.append(("unaligned offset", p))
    p = decode_plan(encode_plan(plan))
    p.nodes[j] = replace(p.nodes[j], device=3)
    out.append(("missing device", p))
    p = decode_plan(encode_plan(plan))
    p.memories[0] = replace(p.memories[0], budget=p.memories[0].size - 1)
    out.append(("over budget", p))
    return out


def test_runtime_refuses_plans_verify_rejects(mlp_dir, tmp_path):
    d = _copy(mlp_dir, tmp_path)
    plan_path = os.path.join(d, "m.plan")
    plan = read_plan(plan_path)
    variants = _unsafe_variants(plan)
    assert [w for w, _ in variants] == ["dropped dependency", "unaligned offset", "missing device", "over budget"]
    for what, p in variants:
        bad = os.path.join(d, "bad.plan")
        write_plan(p, bad)
        v = CliRunner().invoke(c_main, ["verify", bad])
        assert v.exit_code == ExitCode.FINDING, what
        r = _run(bad, "--random-inputs")
        line = _one_error_line(r.stderr)
        assert r.exit_code == ExitCode.BAD_INPUT and "ran " not in r.stdout, (what, r.output)
        with pytest.raises(PlanCheckError):
            run_plan(bad, _feeds(p), backend="numpy")
        assert line[len("error: "):] in v.output, what  # the same message: the same check


def test_verified_plans_skip_the_check_by_hash(mlp_dir, tmp_path):
    from turnip import cache
    from turnip.plancheck import plan_digest

    d = _copy(mlp_dir, tmp_path)
    plan_path = os.path.join(d, "m.plan")
    plan = read_plan(plan_path)
    assert not cache.is_verified(plan_digest(plan))
    assert CliRunner().invoke(c_main, ["verify", plan_path]).exit_code == 0
    assert cache.is_verified(plan_digest(plan))  # verify records it; the runtime then skips re-checking it
    _, unsafe = _unsafe_variants(plan)[0]
    assert not cache.is_verified(plan_digest(unsafe))  # any other bytes are checked again


# ---------------------------------------------------------------------------
# 4. one exception root, one line, exit codes of their own
# ---------------------------------------------------------------------------
def test_one_exception_root():
    from turnip.executor import TurnipError as executor_root
    from turnip.weights import ModelError as weights_model_error

    import turnipc.errors as ce

    assert executor_root is TurnipError and ce.TurnipError is TurnipError
    assert weights_model_error is ModelError
    for cls in (ce.CompileError, ce.ModelImportError, ce.BudgetError, ce.UnboundDimError, PlanFormatError, PlanCheckError,
                OutputError, OutOfMemoryError):
        assert issubclass(cls, TurnipError)
    codes = {int(c) for c in ExitCode}
    assert len(codes) == len(ExitCode)  # every code its own
    errors = {ExitCode.BAD_INPUT, ExitCode.DIFF_ERROR, ExitCode.OUT_OF_MEMORY, ExitCode.CANNOT_WRITE, ExitCode.INTERNAL}
    assert not errors & {ExitCode.OK, ExitCode.FINDING}


def test_unexpected_exception_is_one_line_exit_70_traceback_only_with_v():
    @click.command(cls=ErrorHandlingCommand)
    @verbose_option
    def boom() -> None:
        {}["missing"]  # a bug

    r = CliRunner().invoke(boom, [])
    line = _one_error_line(r.output)
    assert r.exit_code == ExitCode.INTERNAL and "internal error: KeyError" in line and "report" in line and "-v" in line
    r = CliRunner().invoke(boom, ["-v"])
    assert r.exit_code == ExitCode.INTERNAL and "Traceback" in r.output and r.output.strip().splitlines()[-1].startswith("error: ")


def test_gpu_mem_beyond_addressable_is_one_line(tmp_path):
    for mem in (str(2**64), str(2**70), "1e30", "99999999999T"):
        r = CliRunner().invoke(c_main, ["plan", os.path.join(MODELS, "demo_mlp.onnx"), "--dim", "batch=8", "--gpu-mem", mem, "-o", str(tmp_path / "x.plan")])
        assert r.exit_code == ExitCode.BAD_INPUT and "--gpu-mem" in _one_error_line(r.output), (mem, r.output)
        assert not os.path.exists(tmp_path / "x.plan")


def test_external_data_offset_not_a_number(gpt2_dir, tmp_path):
    d = _copy(gpt2_dir, tmp_path)
    model = os.path.join(d, "gpt2_dynamo18.onnx")
    m = onnx.load(model, load_external_data=False)
    for init in m.graph.initializer:
        for e in init.external_data:
            if e.key == "offset":
                e.value = "lots"
    onnx.save(m, model)
    plan = read_plan(os.path.join(d, "m.plan"))
    from turnip.weights import file_sha256

    plan.model_sha256 = file_sha256(model)
    write_plan(plan, os.path.join(d, "m.plan"))
    r = _run(os.path.join(d, "m.plan"), "--random-inputs")
    assert r.exit_code == ExitCode.BAD_INPUT and "not whole numbers" in _one_error_line(r.stderr)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o["tensors"][0].__setitem__("nbytes", "12"),  # TypeError downstream
        lambda o: o["tensors"][0].__setitem__("shape", [2**64 - 1]),  # OverflowError
        lambda o: o["model"].__setitem__("opset", [1, 2]),  # ValueError in dict()
        lambda o: o.__setitem__("model", "x"),  # TypeError / AttributeError
        lambda o: o["nodes"][0].__setitem__("attrs", [1]),  # AttributeError
        lambda o: o["nodes"][0].__setitem__("inputs", [[0]]),  # IndexError
        lambda o: o["memories"][0].__setitem__("size", -5),
        lambda o: o["stats"].__setitem__("nodes", "many"),
        lambda o: o.__setitem__("constants", [["x", b""]]),
    ],
)
def test_malformed_plans_are_one_line_in_every_command(mlp_dir, tmp_path, mutate):
    import msgpack

    d = _copy(mlp_dir, tmp_path)
    good = os.path.join(d, "m.plan")
    obj = msgpack.unpackb(open(good, "rb").read(), raw=False, strict_map_key=False)
    mutate(obj)
    bad = os.path.join(d, "bad.plan")
    with open(bad, "wb") as f:
        f.write(msgpack.packb(obj, use_bin_type=True))
    with pytest.raises(PlanFormatError):
        read_plan(bad)
    for args, code in ((["verify", bad], 2), (["inspect", bad], 2), (["inspect", bad, "--json"], 2), (["diff", good, bad], 3)):
        r = CliRunner().invoke(c_main, args)
        assert r.exit_code == code, (args, r.output)
        assert "Traceback" not in r.output and "error:" in r.output
    r = _run(bad, "--random-inputs")
    assert r.exit_code == ExitCode.BAD_INPUT and "malformed" in _one_error_line(r.stderr)


# ---------------------------------------------------------------------------
# 5. allocation failures name the bytes
# ---------------------------------------------------------------------------
def test_allocation_failure_is_one_line_naming_the_bytes(mlp_dir, tmp_path):
    from turnip.backends import get_backend

    huge = 1 << 61
    with pytest.raises(OutOfMemoryError, match=str(huge)):
        get_backend("numpy").allocate(Memory(1, "host", -1, huge, huge))
    d = _copy(mlp_dir, tmp_path)
    plan = read_plan(os.path.join(d, "m.plan"))
    host = next(i for i, m in enumerate(plan.memories) if m.kind == "host")
    plan.memories[host] = replace(plan.memories[host], size=huge, budget=huge)
    big = os.path.join(d, "big.plan")
    write_plan(plan, big)
    r = _run(big, "--random-inputs")
    assert r.exit_code == ExitCode.OUT_OF_MEMORY and " bytes " in _one_error_line(r.stderr)


# ---------------------------------------------------------------------------
# 6. output writing
# ---------------------------------------------------------------------------
def test_outputs_refuse_non_regular_targets(mlp_dir, tmp_path):
    d = _copy(mlp_dir, tmp_path)
    plan_path = os.path.join(d, "m.plan")
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "out.npz"
    os.symlink(target, link)
    folder = tmp_path / "adir"
    folder.mkdir()
    for out in (str(link), str(folder), "/dev/full", "/dev/null"):
        r = _run(plan_path, "--random-inputs", "--output", out)
        assert r.exit_code in (ExitCode.CANNOT_WRITE, ExitCode.BAD_INPUT), (out, r.output)  # a directory: click's usage error
        assert "ran " not in r.stdout and "outputs written" not in r.stdout and "Traceback" not in r.output
    assert os.path.islink(link) and target.read_text() == "keep me"
    r = _run(plan_path, "--random-inputs", "--output", "/dev/full")
    assert r.exit_code == ExitCode.CANNOT_WRITE and "not a regular file" in r.stderr
    r = CliRunner().invoke(c_main, ["plan", os.path.join(d, "demo_mlp.onnx"), "--dim", "batch=8", "--gpu-mem", "50%", "-o", str(link)])
    assert r.exit_code == ExitCode.CANNOT_WRITE and os.path.islink(link)


def test_trace_into_missing_folder_fails_before_the_run(mlp_dir, tmp_path):
    d = _copy(mlp_dir, tmp_path)
    r = _run(os.path.join(d, "m.plan"), "--random-inputs", "--trace", str(tmp_path / "nope" / "t.json"))
    assert r.exit_code == ExitCode.CANNOT_WRITE and "does not exist" in _one_error_line(r.stderr)
    assert "ran " not in r.stdout


def test_outputs_and_traces_are_written_whole_and_keep_the_mode(mlp_dir, tmp_path):
    d = _copy(mlp_dir, tmp_path)
    out, trace = tmp_path / "o.npz", tmp_path / "t.json"
    out.write_bytes(b"old")
    os.chmod(out, 0o640)
    r = _run(os.path.join(d, "m.plan"), "--random-inputs", "--output", str(out), "--trace", str(trace))
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640
    with np.load(out) as z:
        assert z.files
    import json

    assert json.loads(trace.read_text())["traceEvents"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_disk_full_is_reported_and_leaves_nothing(tmp_path):
    from turnip.atomic import atomic_write

    target = tmp_path / "o.bin"
    with pytest.raises(OutputError, match="cannot write"):
        with atomic_write(target, "outputs") as f:
            f.write(b"x")
            raise OSError(28, "No space left on device")  # what a full disk makes write() raise
    assert os.listdir(tmp_path) == []


def test_sigterm_removes_the_temporary_file(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {os.path.join(ROOT, 'runtime')!r})
        from turnip.atomic import atomic_write
        from turnip.cli_errors import Terminated, sigterm_raises
        with sigterm_raises():
            try:
                with atomic_write({str(tmp_path / 'out.bin')!r}) as f:
                    f.write(b"partial")
                    print("writing", flush=True)
                    time.sleep(30)
            except Terminated:
                sys.exit(143)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    assert [x for x in os.listdir(tmp_path) if x.endswith(".tmp")]  # the temporary file exists mid-write
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 143
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# 7. an empty model sha256
# ---------------------------------------------------------------------------
def test_empty_model_sha256_is_refused(mlp_dir, tmp_path):
    d = _copy(mlp_dir, tmp_path)
    plan = read_plan(os.path.join(d, "m.plan"))
    plan.model_sha256 = ""
    bad = os.path.join(d, "nosha.plan")
    write_plan(plan, bad)
    r = CliRunner().invoke(c_main, ["verify", bad])
    assert r.exit_code == ExitCode.FINDING and "sha256" in r.output
    with pytest.raises((ModelError, PlanCheckError), match="sha256"):
        run_plan(bad, _feeds(plan), backend="numpy")
    # past the plan check (cache), the model check itself still refuses
    from turnip.weights import InitialData

    with pytest.raises(ModelError, match="no valid sha256"):
        InitialData(plan, bad)
    r = _run(bad, "--random-inputs")
    assert r.exit_code == ExitCode.BAD_INPUT and "sha256" in _one_error_line(r.stderr)


def test_interrupt_exit_code():
    @click.command(cls=ErrorHandlingCommand)
    def stop() -> None:
        raise KeyboardInterrupt

    t0 = time.monotonic()
    r = CliRunner().invoke(stop, [])
    assert r.exit_code == ExitCode.INTERRUPTED and _one_error_line(r.output) == "error: interrupted"
    assert time.monotonic() - t0 < 5
