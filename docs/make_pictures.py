"""Regenerate the pictures in docs/img/ from a fixture (GPT-2, dynamo opset 18, 25% budget).

    python docs/make_pictures.py

Writes docs/img/gpt2-25.plan's memory plot (memory.png), a real run's trace
(run-trace.json) and a simulated H100 trace (sim-trace.json), and both drawn
side by side (timeline.png). tests/test_pictures.py checks their content.
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
IMG = os.path.join(HERE, "img")


def main() -> int:
    os.makedirs(IMG, exist_ok=True)
    plan = os.path.join(IMG, "gpt2-25.plan")
    model = os.path.join(ROOT, "tests", "models", "gpt2_dynamo18.onnx")

    def run(*args: str) -> None:
        subprocess.run(list(args), check=True)

    bin_dir = os.path.dirname(sys.executable)
    turnipc, turnip_run = os.path.join(bin_dir, "turnipc"), os.path.join(bin_dir, "turnip-run")
    run(turnipc, "plan", model, "--gpu-mem", "25%", "--dim", "batch=2", "--dim", "seq=16", "-q", "-o", plan)
    run(turnipc, "inspect", plan, "--plot", os.path.join(IMG, "memory.png"))
    run(turnip_run, plan, "--random-inputs", "--seed", "0", "--backend", "numpy", "--trace", os.path.join(IMG, "run-trace.json"))
    run(turnipc, "simulate", plan, "--device", "h100", "--trace", os.path.join(IMG, "sim-trace.json"))
    run(turnipc, "timeline", os.path.join(IMG, "sim-trace.json"), os.path.join(IMG, "run-trace.json"),
        "--png", os.path.join(IMG, "timeline.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
