"""Golden plans: `make plans` regenerates them; tests/test_golden_plans.py re-plans and diffs.

Each entry is one bundled model at one budget. The plan file (and a text
summary beside it, for reading in review) lives in plans/. CI re-plans every
entry and runs `turnipc diff` against the golden file: any change fails the
build until the goldens are regenerated on purpose (`make plans`), which is
also the proof that planning is deterministic across machines.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@dataclass(frozen=True)
class Golden:
    name: str
    model: str  # relative to the repository root
    gpu_mem: str
    dims: tuple[str, ...] = ()
    solver: str = "search"  # the planner default
    gpus: int = 1

    @property
    def plan_path(self) -> str:
        return os.path.join(HERE, f"{self.name}.plan")

    @property
    def summary_path(self) -> str:
        return os.path.join(HERE, f"{self.name}.txt")

    def argv(self, out: str) -> list[str]:
        a = ["plan", os.path.join(ROOT, self.model), "--gpu-mem", self.gpu_mem, "-o", out, "-q", "--solver", self.solver,
             "--gpus", str(self.gpus)]
        for d in self.dims:
            a += ["--dim", d]
        return a


GOLDENS = [
    Golden("demo_mlp-100", "tests/models/demo_mlp.onnx", "100%", ("batch=8",)),
    Golden("demo_mlp-25", "tests/models/demo_mlp.onnx", "25%", ("batch=8",)),
    Golden("demo_mlp-25-cpsat", "tests/models/demo_mlp.onnx", "25%", ("batch=8",), solver="cpsat"),
    Golden("gpt2_dynamo18-25", "tests/models/gpt2_dynamo18.onnx", "25%", ("batch=2", "seq=16")),
    Golden("llama_legacy17-25", "tests/models/llama_legacy17.onnx", "25%", ("batch=2", "seq=16")),
    Golden("bert_dynamo23-50-2gpu", "tests/models/bert_dynamo23.onnx", "50%", ("batch=2", "seq=16"), gpus=2),
]


def plan_into(g: Golden, out: str) -> None:
    from click.testing import CliRunner

    from turnipc.cli import main

    r = CliRunner().invoke(main, g.argv(out), catch_exceptions=False)
    if r.exit_code != 0:
        raise SystemExit(f"planning {g.name} failed: {r.output}")


def main() -> None:
    from turnip.plan import read_plan

    from turnipc.summary import summary_text

    for g in GOLDENS:
        plan_into(g, g.plan_path)
        with open(g.summary_path, "w") as f:
            f.write(summary_text(read_plan(g.plan_path)) + "\n")
        print(f"wrote {os.path.relpath(g.plan_path, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
