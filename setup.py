"""Only the optional C parts: the native reader (bars/data/_fastcsv.c) and the models' CPU kernels
(bars/models/layers/_kernels.c); everything else is in pyproject.toml. Without a C compiler the build skips them
(optional=True): bars then reads raw files with pyarrow alone (bars.data.native) and the layers run their torch
fallbacks, which compute the same values (bars.models.layers.kernels). The kernels are built with OpenMP (torch's
own runtime at run time: the dropout mask splits its blocks between torch's threads); a compiler without it (Apple's
clang) builds them without, single-threaded, rather than not at all."""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, LinkError

OPENMP = ["-fopenmp"]


class BuildExt(build_ext):
    def build_extension(self, ext: Extension) -> None:
        if OPENMP[0] not in ext.extra_compile_args:
            super().build_extension(ext)
            return
        try:
            super().build_extension(ext)
        except (CompileError, LinkError) as e:  # no OpenMP here: the same kernels on one thread
            print(f"building {ext.name} without OpenMP ({type(e).__name__}: {e})")
            ext.extra_compile_args = [a for a in ext.extra_compile_args if a not in OPENMP]
            ext.extra_link_args = [a for a in ext.extra_link_args if a not in OPENMP]
            super().build_extension(ext)


setup(cmdclass={"build_ext": BuildExt},
      ext_modules=[Extension("bars.data._fastcsv", sources=["bars/data/_fastcsv.c"], optional=True,
                             extra_compile_args=["-O3"]),
                   Extension("bars.models.layers._kernels", sources=["bars/models/layers/_kernels.c"], optional=True,
                             extra_compile_args=["-O3", "-ffp-contract=off", "-fno-math-errno", *OPENMP], extra_link_args=OPENMP)])
