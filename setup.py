"""Build hook: compile the layout search hot loop (turnipc/layout/_canonical.c).

The C file includes no Python headers; it is a plain shared library that
turnipc/layout/canonical.py loads with ctypes. ``optional=True``: without a C
compiler the install still succeeds and turnipc falls back to the (much slower)
Python search with a warning. Everything else is configured in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "turnipc.layout._canonical",
            sources=["turnipc/layout/_canonical.c"],
            extra_compile_args=["-O2", "-std=c99"],
            optional=True,
        )
    ]
)
