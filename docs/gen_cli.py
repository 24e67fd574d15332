"""Regenerate docs/cli.md from the commands' own --help (tests/test_docs.py checks it is current).

    python docs/gen_cli.py
"""

from __future__ import annotations

import os
import sys

import click
from click.testing import CliRunner

HERE = os.path.dirname(os.path.abspath(__file__))

INTRO = """# Command line

Generated from each command's `--help` by `docs/gen_cli.py` (a test fails if
this page and the code disagree). Two programs:

- `turnipc`: the compiler (`plan`, `verify`, `inspect`, `diff`, `simulate`, `layout`);
- `turnip-run`: the runtime.

## Exit codes

| program | 0 | 1 | 2 | 3 |
| --- | --- | --- | --- | --- |
| `turnipc plan` | planned | | bad input: unreadable model, unbound dim, unsupported op, budget below the smallest feasible one (no file written) | |
| `turnipc verify` | plan proved safe | a violation (the first is named) | unreadable plan | |
| `turnipc inspect`, `simulate` | ok | | unreadable plan, unknown device | |
| `turnipc diff` | no change | changes within thresholds | a threshold crossed | unreadable input |
| `turnipc layout` | fits (or no capacity given) | does not fit the capacity | unreadable input | |
| `turnip-run` | ran (and `--check` PASSED) | `--check` FAILED | bad plan, missing model, wrong inputs, a node failed | |

Errors are one line on stderr, starting `error:`, naming the problem and the fix.

## `turnipc inspect --json` keys

`budget_bytes`, `peak_bytes` (largest over devices), `peak_bytes_per_device`,
`no_offload_peak_bytes` (what the same order needs with unlimited memory: pick
budgets from it), `lower_bound_bytes` (largest single-task working set),
`offload_bytes`, `reload_bytes`, `move_bytes`, `host_bytes`, `nodes` (counts by
kind), `total_flops`, `memories`, `top_tensors`, `ops`, `options`, `model`,
`model_sha256`, `format_version`, `devices`, `largest_tasks` (the compute nodes
with the largest working sets: `node`, `name`, `op`, `bytes`), `tiling` (null
for an untiled plan; else `max_task_bytes`, `tiled_ops`, `blocks`, `assembles`,
`splits` (re-partitions), and `tiled`: original op name -> blocks).
"""


def help_text(cmd: click.Command, prog: str, *sub: str) -> str:
    """Help as users see it (subcommands through their group, so they inherit its settings)."""
    r = CliRunner().invoke(cmd, [*sub, "--help"], prog_name=prog, terminal_width=100)
    return r.output.rstrip()


def render() -> str:
    from turnip.cli import main as run_main

    from turnipc.cli import main as c_main

    out = [INTRO]
    out += ["## `turnipc`", "", "```", help_text(c_main, "turnipc"), "```", ""]
    for name in sorted(c_main.commands):
        out += [f"### `turnipc {name}`", "", "```", help_text(c_main, "turnipc", name), "```", ""]
    out += ["## `turnip-run`", "", "```", help_text(run_main, "turnip-run"), "```", ""]
    return "\n".join(out)


def main() -> int:
    with open(os.path.join(HERE, "cli.md"), "w") as f:
        f.write(render())
    print("wrote docs/cli.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
