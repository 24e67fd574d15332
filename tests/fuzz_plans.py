"""A seeded mutator over plan files, and the campaign `make fuzz` runs.

Every input is a golden plan (plans/*.plan) damaged one of two ways:

* bytes: flip, overwrite, insert or delete a few bytes, or truncate;
* structure: decode the msgpack, then at a random place in the tree replace a
  value with a hostile one (wrong type, negative, 2**63, 2**64-1, NaN, huge
  string, empty container), delete a key, drop / duplicate / swap list items,
  or shift an offset / drop a dependency (plans that read fine but are unsafe).

Each input goes through the consumers a user can point at a file: the plan
reader, the runtime's plan check (:func:`turnip.plancheck.check_plan`, which
`turnipc verify` is), `inspect`'s summaries, `diff` (against the original)
and, in the campaign, `turnip-run` itself (NumPy backend). The only
exceptions allowed out are Turnip's own (:class:`turnip.errors.TurnipError`);
anything else is a traceback and a failure. And no run may complete on a plan
the check rejected.

    python tests/fuzz_plans.py --cases 20000 [--seed 1] [--run-every 5]

prints the figures (inputs tried, outcomes by kind) and writes them to
bench/results/fuzz.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import random
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEEDS = ("demo_mlp-25.plan", "demo_mlp-100.plan", "bert_dynamo23-50-2gpu.plan", "gpt2_dynamo18-25.plan")

HOSTILE: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 255, 256, 257, 2**31, 2**32 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -(2**63),
    0.5, -0.0, float("nan"), float("inf"), "", "x", "float32", "gpu", "compute", "weight", "\x00", "../../etc/passwd",
    "a" * 300, b"", b"\x00" * 8, [], [0], [0, 0, 0], [None], [[0, 0, 0]], {}, {"a": 1}, {"__tensor__": True, "dtype": "int8"},
)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a decoded plan, the root excluded."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append(prefix + (k,))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append(prefix + (i,))
            out.extend(_paths(v, prefix + (i,)))
    return out


def _get(obj: Any, path: tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def mutate_structure(obj: dict, rng: random.Random, paths: list[tuple]) -> tuple[dict, str]:
    """A deep copy of ``obj`` with one structural mutation; returns (object, what)."""
    o = msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False, strict_map_key=False)  # a deep copy, fast
    r = rng.random()
    if r < 0.12 and o.get("nodes"):  # unsafe but well-formed: drop a dependency
        n = rng.choice(o["nodes"])
        if n.get("deps"):
            n["deps"].pop(rng.randrange(len(n["deps"])))
            return o, "drop-dep"
    if r < 0.2 and o.get("nodes"):  # unsafe: shift a location
        n = rng.choice(o["nodes"])
        locs = [x for x in n.get("inputs", []) + n.get("outputs", []) if isinstance(x, list) and len(x) == 3]
        if locs:
            loc = rng.choice(locs)
            loc[1] += rng.choice((-256, 4, 256, 1 << 20))
            return o, "shift-loc"
    if r < 0.25 and o.get("nodes"):  # unsafe: a device that does not exist
        rng.choice(o["nodes"])["device"] = rng.choice((1, 2, 7, -1))
        return o, "device"
    path = rng.choice(paths)
    parent = _get(o, path[:-1])
    key = path[-1]
    r = rng.random()
    if r < 0.6:
        parent[key] = rng.choice(HOSTILE)
        return o, "replace"
    if r < 0.75:
        if isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
        return o, "delete"
    if r < 0.85 and isinstance(parent, list):
        parent.insert(key, msgpack.unpackb(msgpack.packb(parent[key], use_bin_type=True), raw=False, strict_map_key=False))
        return o, "duplicate"
    if r < 0.95 and isinstance(parent, list) and len(parent) > 1:
        j = rng.randrange(len(parent))
        parent[key], parent[j] = parent[j], parent[key]
        return o, "swap"
    v = parent[key]
    if isinstance(v, int) and not isinstance(v, bool):
        parent[key] = v + rng.choice((-1, 1, -v - 1, 1 << 40))
        return o, "nudge"
    parent[key] = rng.choice(HOSTILE)
    return o, "replace"


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    b = bytearray(data)
    r = rng.random()
    if r < 0.2:
        return bytes(b[: rng.randrange(len(b))]), "truncate"
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(b))
        k = rng.random()
        if k < 0.5:
            b[i] ^= 1 << rng.randrange(8)
        elif k < 0.7:
            b[i] = rng.choice((0x00, 0xC0, 0xC1, 0xCF, 0xD3, 0xDB, 0xDD, 0xDF, 0xFF, 0x7F, 0x80, 0x90, 0xA0))
        elif k < 0.85:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
        else:
            del b[i : i + rng.randint(1, 9)]
    return bytes(b), "bytes"


def _encode(obj: Any) -> bytes | None:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return None  # not representable (e.g. an int beyond 64 bits): not an input a file can hold


class Seeds:
    """The golden plans, decoded once."""

    def __init__(self, names: tuple[str, ...] = SEEDS) -> None:
        from turnipc.diff import read_plan_lenient

        self.items = []
        self.originals = {}
        for name in names:
            path = os.path.join(ROOT, "plans", name)
            data = open(path, "rb").read()
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
            self.items.append((name, path, data, obj, _paths(obj)))
            self.originals[path] = read_plan_lenient(path)


def consumers(data: bytes, original: Any, scratch: str) -> Callable[[], Any]:
    """The plan consumers, in order; each returns normally or raises."""
    from turnip.plan import decode_plan
    from turnip.plancheck import check_plan

    from turnipc.diff import diff_plans, read_plan_lenient
    from turnipc.summary import summary_obj, summary_text

    def run_all() -> dict[str, str]:
        res: dict[str, str] = {}
        try:
            plan = decode_plan(data)
        except Exception as e:
            res["read"] = type(e).__name__
            _own(e, "read")
            plan = None
        if plan is not None:
            res["read"] = "ok"
            try:
                check_plan(plan, data=True)
                res["check"] = "ok"
            except Exception as e:
                res["check"] = type(e).__name__
                _own(e, "check")
            try:
                summary_obj(plan, 5)
                summary_text(plan, 5)
                res["inspect"] = "ok"
            except Exception as e:
                res["inspect"] = type(e).__name__
                _own(e, "inspect")
        with open(scratch, "wb") as f:
            f.write(data)
        try:
            new = read_plan_lenient(scratch)
            diff_plans(original, new, device=None)
            res["diff"] = "ok"
        except Exception as e:
            res["diff"] = type(e).__name__
            _own(e, "diff")
        res["_plan"] = plan  # type: ignore[assignment]
        return res

    return run_all


class Traceback_(Exception):
    """An exception that is not Turnip's own escaped a consumer."""


def _own(e: BaseException, where: str) -> None:
    from turnip.errors import TurnipError

    if not isinstance(e, TurnipError):
        raise Traceback_(f"{where}: {type(e).__name__}: {e}\n" + "".join(traceback.format_exception(type(e), e, e.__traceback__))) from e


def fuzz(cases: int, seed: int = 0, run_every: int = 0, seconds: float | None = None, stop_on_traceback: bool = True,
         seeds: tuple[str, ...] = SEEDS) -> dict[str, Any]:
    """Run ``cases`` mutated inputs (or until ``seconds``); return the figures.

    ``run_every`` > 0 also runs every ``run_every``-th input that reads as a
    plan through ``turnip.run.run_plan`` (NumPy backend, random feeds).
    """
    seeds = Seeds(seeds)
    rng = random.Random(seed)
    outcome: collections.Counter = collections.Counter()
    kinds: collections.Counter = collections.Counter()
    runs: collections.Counter = collections.Counter()
    tracebacks: list[str] = []
    completed_on_rejected = 0
    t0 = time.monotonic()
    tried = 0
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("TURNIP_CACHE_DIR", os.path.join(tmp, "cache"))
        scratch = os.path.join(tmp, "in.plan")
        for case in range(cases):
            if seconds is not None and time.monotonic() - t0 > seconds:
                break
            name, path, data, obj, paths = seeds.items[case % len(seeds.items)]
            if rng.random() < 0.35:
                blob, what = mutate_bytes(data, rng)
            else:
                o, what = mutate_structure(obj, rng, paths)
                blob = _encode(o)
                if blob is None:
                    continue
            tried += 1
            kinds[what] += 1
            try:
                res = consumers(blob, seeds.originals[path], scratch)()
            except Traceback_ as e:
                tracebacks.append(f"case {case} seed {seed} ({name}, {what}): {e}")
                outcome["TRACEBACK"] += 1
                if stop_on_traceback:
                    break
                continue
            plan = res.pop("_plan")
            for k, v in res.items():
                outcome[f"{k}: {v}"] += 1
            if run_every and plan is not None and case % run_every == 0:
                r = _run(plan, path)
                runs[r] += 1
                if r == "completed" and res.get("check") != "ok":
                    completed_on_rejected += 1
                if r.startswith("TRACEBACK"):
                    tracebacks.append(f"case {case} seed {seed} ({name}, {what}): run: {r}")
    return {
        "seed": seed,
        "inputs_tried": tried,
        "seconds": round(time.monotonic() - t0, 1),
        "mutations": dict(sorted(kinds.items())),
        "outcomes": dict(sorted(outcome.items())),
        "runs": dict(sorted(runs.items())),
        "runs_completed_on_plans_the_check_rejects": completed_on_rejected,
        "tracebacks": len(tracebacks),
        "traceback_examples": tracebacks[:5],
    }


def _run(plan: Any, seed_path: str) -> str:
    """Run a (mutated) plan with the real runtime; the outcome's kind."""
    from turnip.errors import TurnipError
    from turnip.run import random_feeds, run_plan

    try:
        feeds = random_feeds(plan, 0)
    except TurnipError as e:
        return f"refused before run: {type(e).__name__}"
    except Exception as e:  # noqa: BLE001
        return f"TRACEBACK in random_feeds: {type(e).__name__}: {e}"
    try:
        run_plan(plan, feeds, backend="numpy", plan_path=seed_path)
        return "completed"
    except TurnipError as e:
        return f"refused: {type(e).__name__}"
    except Exception as e:  # noqa: BLE001
        return f"TRACEBACK: {type(e).__name__}: {e}\n" + "".join(traceback.format_exception(type(e), e, e.__traceback__))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--run-every", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "fuzz.json"))
    a = ap.parse_args()
    figures = fuzz(a.cases, a.seed, a.run_every, a.seconds, stop_on_traceback=False)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(figures, f, indent=2, default=lambda x: x if not isinstance(x, float) or math.isfinite(x) else str(x))
        f.write("\n")
    print(json.dumps(figures, indent=2))
    return 1 if figures["tracebacks"] or figures["runs_completed_on_plans_the_check_rejects"] else 0


if __name__ == "__main__":
    sys.exit(main())
