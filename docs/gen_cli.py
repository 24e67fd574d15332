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

One table for both programs (`turnip.errors.ExitCode`). No error shares a
code with success or with a finding, so a script can tell "the tool found
something" (1) from "the tool failed" (2 and up): a crashing `diff` no longer
passes `[ $rc -le 1 ]`.

{EXIT_TABLE}

Per command:

| program | 0 | 1 | 2 | 3 |
| --- | --- | --- | --- | --- |
| `turnipc plan` | planned | | bad input: unreadable model, unbound dim, unsupported op, budget below the smallest feasible one (no file written) | |
| `turnipc verify` | plan proved safe | a violation (the first is named) | unreadable plan | |
| `turnipc inspect`, `simulate` | ok | | unreadable plan, unknown device | |
| `turnipc diff` | no change | changes within thresholds | a threshold crossed | any error (unreadable input, bad command line) |
| `turnipc layout` | fits (or no capacity given) | does not fit the capacity | unreadable input | |
| `turnip-run` | ran (and `--check` PASSED) | `--check` FAILED | bad or unsafe plan, missing or changed model or weights, wrong inputs, a node failed | |

Every command may also exit 4 (out of memory), 5 (cannot write an output),
70 (internal error), 130 (interrupted) or 143 (SIGTERM).

Errors are one line on stderr, starting `error:`, naming the problem and the
fix (with `--json`, also `{"error": ..., "exit_code": ...}` on stdout). An
unexpected exception is a bug: one line `error: internal error: ...` asking
for a report; `turnipc -v ...` / `turnip-run -v ...` print its traceback.

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


def exit_table() -> str:
    from turnip.cli_errors import EXIT_TERMINATED
    from turnip.errors import EXIT_CODE_MEANINGS

    rows = ["| code | meaning |", "| --- | --- |"]
    rows += [f"| {int(code)} | {text} |" for code, text in EXIT_CODE_MEANINGS.items()]
    rows.append(f"| {EXIT_TERMINATED} | terminated by SIGTERM (temporary files removed) |")
    return "\n".join(rows)


def help_text(cmd: click.Command, prog: str, *sub: str) -> str:
    """Help as users see it (subcommands through their group, so they inherit its settings)."""
    r = CliRunner().invoke(cmd, [*sub, "--help"], prog_name=prog, terminal_width=100)
    return r.output.rstrip()


def render() -> str:
    from turnip.cli import main as run_main

    from turnipc.cli import main as c_main

    out = [INTRO.replace("{EXIT_TABLE}", exit_table())]
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
