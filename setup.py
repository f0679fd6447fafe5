"""Only the optional native reader (bars/data/_fastcsv.c); everything else is in pyproject.toml. Without a C
compiler the build skips it (optional=True) and bars reads raw files with pyarrow alone (bars.data.native)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("bars.data._fastcsv", sources=["bars/data/_fastcsv.c"], optional=True,
                             extra_compile_args=["-O3"])])
