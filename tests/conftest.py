import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "models"))

# Turnip's cache (verified plans, file hashes, planned models) goes to a folder of this test run,
# not the user's ~/.cache/turnip: tests neither read a developer's cache nor leave entries behind.
# Subprocesses the tests start inherit it. A test that wants its own sets TURNIP_CACHE_DIR itself.
if "TURNIP_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["TURNIP_CACHE_DIR"] = tempfile.mkdtemp(prefix="turnip-test-cache-")
