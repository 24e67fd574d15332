"""A small on-disk cache: file hashes, and the plans already proved safe.

Two facts are expensive to establish and cheap to remember:

* the sha256 of a weight file (about 1 s per GiB). It is remembered per file
  identity and state: device, inode, size, mtime and ctime (nanoseconds).
  Writing a file changes its mtime and ctime; ``touch -d`` can set mtime back
  but not ctime, so a file flipped and re-dated is hashed again.
* that a plan passed :func:`turnip.plancheck.check_plan`, remembered by the
  sha256 of the plan's bytes: the escape hatch that lets a run skip the check
  for a plan ``turnipc verify`` or an earlier run already proved.

Each entry is one small file under the cache folder, written atomically; a
cache that cannot be read or written is simply not used (never an error).
The folder is ``$TURNIP_CACHE_DIR``, else ``$XDG_CACHE_HOME/turnip``, else
``~/.cache/turnip``.
"""

from __future__ import annotations

import hashlib
import os
import re

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def cache_dir() -> str:
    """Turnip's cache folder (verified plans, file hashes, planned models): $TURNIP_CACHE_DIR, else the XDG cache."""
    d = os.environ.get("TURNIP_CACHE_DIR")
    if d:
        return d
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "turnip")


def _entry(kind: str, key: str) -> str:
    return os.path.join(cache_dir(), kind, key)


def _get(kind: str, key: str) -> str | None:
    try:
        with open(_entry(kind, key)) as f:
            return f.read(200).strip()
    except (OSError, UnicodeDecodeError):
        return None


def _put(kind: str, key: str, value: str) -> None:
    from .atomic import write_bytes
    from .errors import OutputError

    folder = os.path.join(cache_dir(), kind)
    try:
        os.makedirs(folder, exist_ok=True)
        write_bytes(os.path.join(folder, key), value.encode(), "cache entry")
    except (OSError, OutputError):
        pass  # a cache that cannot be written is not used


def is_sha256(s: object) -> bool:
    """A lowercase hex sha256 (what plans record)."""
    return isinstance(s, str) and bool(_HEX64.match(s))


def file_state_key(st: os.stat_result) -> str:
    """The cache key of a file in a given state (identity, size, mtime, ctime)."""
    ident = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()


def cached_file_hash(st: os.stat_result) -> str | None:
    h = _get("sha256", file_state_key(st))
    return h if is_sha256(h) else None


def remember_file_hash(st: os.stat_result, digest: str) -> None:
    _put("sha256", file_state_key(st), digest)


def is_verified(plan_digest: str) -> bool:
    """Whether the plan with these bytes passed the full plan check before."""
    return is_sha256(plan_digest) and _get("verified", plan_digest) == "ok"


def remember_verified(plan_digest: str) -> None:
    if is_sha256(plan_digest):
        _put("verified", plan_digest, "ok")
