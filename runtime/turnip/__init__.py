"""turnip: the Turnip runtime. Loads a MEMGRAPH plan and executes it in any dependency-respecting order."""

__version__ = "0.1.0"
