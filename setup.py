"""Only the optional C parts: the native reader (bars/data/_fastcsv.c) and the models' CPU kernels
(bars/models/layers/_kernels.c); everything else is in pyproject.toml. Without a C compiler the build skips them
(optional=True): bars then reads raw files with pyarrow alone (bars.data.native) and the layers run their torch
fallbacks, which compute the same values (bars.models.layers.kernels)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("bars.data._fastcsv", sources=["bars/data/_fastcsv.c"], optional=True,
                             extra_compile_args=["-O3"]),
                   Extension("bars.models.layers._kernels", sources=["bars/models/layers/_kernels.c"], optional=True,
                             extra_compile_args=["-O3", "-ffp-contract=off", "-fopenmp"],
                             extra_link_args=["-fopenmp"])])
