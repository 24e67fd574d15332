"""One command (model -> cached plan -> run), plans that travel, and the CLI hygiene of issue 12.

Every user-facing error: its exit code, one `error:` line, and nothing written.
Real programs (click's runner on the real commands, or a subprocess), the real
compiler and runtime, onnxruntime for --check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from turnip.cli import main as run_main

from turnipc.cli import main as compiler_main

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GPT2 = os.path.join(HERE, "models", "gpt2_dynamo18.onnx")
GOLDEN = os.path.join(ROOT, "plans", "gpt2_dynamo18-25.plan")  # planned with --gpu-mem 25% --dim batch=2 --dim seq=16
DIMS = ["--dim", "batch=2", "--dim", "seq=16"]


@pytest.fixture
def runner():
    return CliRunner()


def _copy_model(folder) -> str:
    for f in ("gpt2_dynamo18.onnx", "gpt2_dynamo18.onnx.data"):
        shutil.copy(os.path.join(HERE, "models", f), os.path.join(folder, f))
    return os.path.join(folder, "gpt2_dynamo18.onnx")


def _files(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def _one_error(r, code: int) -> str:
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


# -- one command ---------------------------------------------------------------
def test_model_plans_once_then_runs_from_the_cache(runner, tmp_path):
    cache = tmp_path / "cache"
    args = [GPT2, "--gpu-mem", "25%", *DIMS, "--random-inputs", "--check", "--cache-dir", str(cache), "-v"]
    r = runner.invoke(run_main, args)
    assert r.exit_code == 0, r.output
    assert "planned" in r.stderr and "PASSED" in r.stdout
    [cached] = os.listdir(cache)
    r = runner.invoke(run_main, args)
    assert r.exit_code == 0 and "using cached plan" in r.stderr, r.output
    assert os.listdir(cache) == [cached]
    # the cached plan is the plan `turnipc plan` writes for the same options
    fresh = tmp_path / "cache" / "fresh.plan"
    assert runner.invoke(compiler_main, ["plan", GPT2, "--gpu-mem", "25%", *DIMS, "-o", str(fresh), "-q"]).exit_code == 0
    assert fresh.read_bytes() == (cache / cached).read_bytes()
    # other options: another cache entry
    r = runner.invoke(run_main, [GPT2, "--gpu-mem", "50%", *DIMS, "--random-inputs", "--cache-dir", str(cache)])
    assert r.exit_code == 0 and len(os.listdir(cache)) == 3


def test_no_cache_writes_nothing(runner, tmp_path):
    cache = tmp_path / "cache"
    r = runner.invoke(run_main, [GPT2, "--gpu-mem", "25%", *DIMS, "--random-inputs", "--no-cache", "--cache-dir", str(cache)])
    assert r.exit_code == 0, r.output
    assert not cache.exists()


def test_model_without_budget_is_named_as_a_model(runner, tmp_path):
    msg = _one_error(runner.invoke(run_main, [GPT2, "--random-inputs", "--cache-dir", str(tmp_path / "c")]), 2)
    assert "is an ONNX model, not a plan" in msg and "--gpu-mem" in msg
    assert _files(tmp_path) == []


def test_plan_given_model_options_is_named_as_a_plan(runner, tmp_path):
    msg = _one_error(runner.invoke(run_main, [GOLDEN, "--gpu-mem", "25%", "--random-inputs"]), 2)
    assert "is a Turnip plan, not an ONNX model" in msg and "--gpu-mem" in msg


def test_plan_given_as_model_to_turnipc(runner, tmp_path):
    out = tmp_path / "x.plan"
    msg = _one_error(runner.invoke(compiler_main, ["plan", GOLDEN, "--gpu-mem", "25%", "-o", str(out)]), 2)
    assert "is a Turnip plan, not an ONNX model" in msg and "turnip-run" in msg
    assert not out.exists()


@pytest.mark.parametrize("command", [["verify"], ["inspect"]])
def test_model_given_as_plan_to_turnipc(runner, command):
    msg = _one_error(runner.invoke(compiler_main, [*command, GPT2]), 2)
    assert "is an ONNX model, not a plan" in msg and "turnipc plan" in msg


def test_model_option_given_a_plan(runner, tmp_path):
    msg = _one_error(runner.invoke(run_main, [GOLDEN, "--model", GOLDEN, "--random-inputs"]), 2)
    assert "--model" in msg and "is a Turnip plan, not an ONNX model" in msg


def test_output_equal_to_input_is_refused(runner, tmp_path):
    model = _copy_model(tmp_path)
    before = open(model, "rb").read()
    msg = _one_error(runner.invoke(compiler_main, ["plan", model, "--gpu-mem", "25%", *DIMS, "-o", model]), 2)
    assert "is the input model" in msg
    assert open(model, "rb").read() == before
    plan = tmp_path / "p.plan"
    shutil.copy(GOLDEN, plan)
    before = plan.read_bytes()
    msg = _one_error(runner.invoke(run_main, [str(plan), "--model", model, "--random-inputs", "--output", str(plan)]), 2)
    assert "is the input file" in msg and plan.read_bytes() == before


# -- plans travel --------------------------------------------------------------
def test_moved_plan_runs_with_model_and_diffs_clean_against_a_fresh_plan(runner, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere" / "gpt2.plan"
    moved.parent.mkdir()
    shutil.copy(GOLDEN, moved)
    # the recorded relative path no longer leads to the model ...
    r = runner.invoke(run_main, [str(moved), "--random-inputs"])
    assert r.exit_code == 2 and "not found" in r.stderr
    # ... --model says where it is (the sha256 still has to match)
    r = runner.invoke(run_main, [str(moved), "--model", GPT2, "--random-inputs", "--check"])
    assert r.exit_code == 0 and "PASSED" in r.stdout, r.output
    other = tmp_path / "other"
    other.mkdir()
    wrong = _copy_model(other)
    with open(wrong, "ab") as f:
        f.write(b"\0")
    r = runner.invoke(run_main, [str(moved), "--model", wrong, "--random-inputs"])
    assert r.exit_code == 2 and "model changed since planning" in r.stderr
    # a fresh plan of the same model and options, made from another folder, is no change
    monkeypatch.chdir(other)
    assert runner.invoke(compiler_main, ["plan", GPT2, "--gpu-mem", "25%", *DIMS, "-o", "fresh.plan", "-q"]).exit_code == 0
    r = runner.invoke(compiler_main, ["diff", GOLDEN, "fresh.plan", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["changed"] is False and any("same model" in n for n in d["notes"])


# -- hygiene -------------------------------------------------------------------
def test_versions_and_quiet(runner, tmp_path):
    import turnip

    import turnipc

    for main, name in ((run_main, "turnip-run"), (compiler_main, "turnipc")):
        r = runner.invoke(main, ["--version"])
        assert r.exit_code == 0 and r.stdout.strip() == f"{name}, version {turnip.__version__}"
    assert turnip.__version__ == turnipc.__version__
    r = runner.invoke(run_main, [GOLDEN, "--random-inputs", "-q"])
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""


def test_check_reports_against_the_tolerance(runner):
    r = runner.invoke(run_main, [GOLDEN, "--random-inputs", "--check"])
    assert r.exit_code == 0
    assert "x the tolerance (atol 0.0001, rtol 0.001)" in r.stdout and r.stdout.splitlines()[-1].startswith("PASSED: worst error")
    r = runner.invoke(run_main, [GOLDEN, "--random-inputs", "--check", "--json"])
    obj = json.loads(r.stdout)
    assert 0 <= obj["check"]["worst_tol_ratio"] <= 1
    assert all(0 <= o["tol_ratio"] <= 1 for o in obj["check"]["outputs"])


def test_tolerance_ratio_is_what_decides():
    import numpy as np
    from turnip.check import compare

    ref = {"y": np.array([0.0, 1e-7, 100.0])}
    # near-zero reference: huge relative error, well within atol -> ratio < 1, ok
    [c] = compare({"y": np.array([5e-5, 2e-7, 100.0])}, ref, atol=1e-4, rtol=1e-3)
    assert c.ok and c.max_rel > 100 and c.tol_ratio == pytest.approx(0.5)
    [c] = compare({"y": np.array([0.0, 1e-7, 100.3])}, ref, atol=1e-4, rtol=1e-3)
    assert not c.ok and c.tol_ratio == pytest.approx(0.3 / (1e-4 + 0.1))


def test_effort_option_and_its_old_name(runner, tmp_path):
    a, b = tmp_path / "a.plan", tmp_path / "b.plan"
    base = ["plan", GPT2, "--gpu-mem", "25%", *DIMS, "--solver", "cpsat", "-q"]
    assert runner.invoke(compiler_main, [*base, "--effort", "1", "-o", str(a)]).exit_code == 0
    assert runner.invoke(compiler_main, [*base, "--time-budget", "1", "-o", str(b)]).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    assert json_effort(a) == 1.0
    r = runner.invoke(compiler_main, ["plan", "--help"])
    says_effort_is_not_clock = "wall clock" in r.stdout  # the help says effort is counted work, never a clock
    assert "--effort" in r.stdout and "--time-budget" not in r.stdout and says_effort_is_not_clock


def json_effort(path) -> float:
    from turnip.plan import read_plan

    return read_plan(path).options["effort"]


def test_missing_onnxruntime_is_one_line_with_the_install_command(tmp_path):
    code = "import sys; sys.modules['onnxruntime'] = None; from turnip.cli import main; main(prog_name='turnip-run')"
    out = tmp_path / "out.npz"
    r = subprocess.run([sys.executable, "-c", code, GOLDEN, "--random-inputs", "--check", "--output", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 6, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --check needs onnxruntime") and "pip install onnxruntime" in lines[0]


def test_help_is_fast_and_imports_no_heavy_module():
    code = ("import sys, time; t = time.perf_counter(); from turnip.cli import main; import turnipc.cli; "
            "heavy = [m for m in ('onnx', 'onnxruntime', 'ortools', 'matplotlib', 'turnip.run') if m in sys.modules]; "
            "print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    code = "import turnip, turnipc, sys; print(sorted(m for m in ('numpy', 'onnx', 'turnip.run', 'turnipc.planner') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout


@pytest.mark.parametrize(
    "blocked, args, message",
    [
        ("ortools", ["plan", GPT2, "--gpu-mem", "25%", *DIMS, "--solver", "cpsat", "-o", "{out}"], "--solver cpsat needs ortools"),
        ("matplotlib", ["inspect", GOLDEN, "--plot", "{out}"], "--plot needs matplotlib"),
    ],
)
def test_missing_extras_are_one_line_with_the_install_command(tmp_path, blocked, args, message):
    out = tmp_path / "out.file"
    code = f"import sys; sys.modules[{blocked!r}] = None; from turnipc.cli import main; main(prog_name='turnipc')"
    r = subprocess.run([sys.executable, "-c", code, *[a.format(out=out) for a in args]], capture_output=True, text=True, timeout=120)
    assert r.returncode == 6, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}") and "pip install 'turnip[" in lines[0]
    assert not out.exists()


def test_running_a_plan_needs_none_of_the_extras():
    """What `pip install turnip` (no extras) must be enough for: Session on a plan, greedy planning; ortools/matplotlib/pandas unused."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        pytest.skip("tomllib needs Python 3.11")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        meta = tomllib.load(f)["project"]
    base = " ".join(meta["dependencies"]).lower()
    assert not any(x in base for x in ("ortools", "matplotlib", "pandas", "onnxruntime"))
    assert "ortools" in " ".join(meta["optional-dependencies"]["compiler"])
    code = (
        "import sys\n"
        "for m in ('ortools', 'matplotlib', 'pandas'): sys.modules[m] = None\n"
        "import turnip, turnipc\n"
        "from turnip.run import random_feeds\n"
        f"plan = turnipc.plan({GPT2!r}, gpu_mem='25%', dims={{'batch': 2, 'seq': 16}})\n"
        "with turnip.Session(plan, model=" + repr(GPT2) + ", backend='numpy') as s:\n"
        "    print(s.run(random_feeds(plan, 0))['logits'].shape)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(2, 16, 256)"


@pytest.mark.parametrize("args", [["plan", GPT2, "--gpu-mem", "lots", *DIMS, "-o", "{out}"], ["inspect", GPT2], ["verify", GPT2]])
def test_json_errors_are_json(runner, tmp_path, args):
    out = tmp_path / "p.plan"
    r = runner.invoke(compiler_main, [a.format(out=out) for a in args] + ["--json"])
    assert r.exit_code == 2
    obj = json.loads(r.stdout)
    assert obj["exit_code"] == 2 and obj["error"] == r.stderr.strip()[len("error: "):]
    assert not out.exists()


def test_turnipc_plan_verbose_names_budget_and_reserve(runner, tmp_path):
    out = tmp_path / "p.plan"
    r = runner.invoke(compiler_main, ["plan", GPT2, "--gpu-mem", "25%", *DIMS, "-o", str(out), "-v"])
    assert r.exit_code == 0, r.output
    assert "GPU 0: arena" in r.stdout and "reserve" in r.stdout and '"gpu_mem": "25%"' in r.stdout
    r = runner.invoke(compiler_main, ["plan", GPT2, "--gpu-mem", "25%", *DIMS, "-o", str(out), "-q"])
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""
