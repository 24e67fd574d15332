"""turnipc: the Turnip ahead-of-time compiler (ONNX -> TASKGRAPH -> MEMGRAPH plan)."""

__version__ = "0.1.0"
