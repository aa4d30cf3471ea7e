"""Build the Cython kernels in ``kernels/`` as extension modules inside ``edge_runtime``.

``kernels/_name.pyx`` becomes ``edge_runtime._name``.  Kernels cimport each other as
``edge_runtime._name``, so their ``.pxd`` files are mirrored into a generated include
directory laid out as a package (Cython resolves cimports by qualified module name).

The build fails, never falls back to a pure-Python wheel: without ``kernels/*.pyx``, Cython,
``configs/`` or ``models_int8/`` there is no working package to build.  Release builds carry
no debug info (``-g0``, and on Linux the linker strips the symbol table, ``-s``): the ``.so``
files shrink about 6x.  ``EDGE_RUNTIME_DEBUG_BUILD=1`` keeps ``-g`` and the symbols (for gdb,
perf).  See docs/packaging.md.
"""
import os
import shutil
import sys

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

try:
    from Cython.Build import cythonize
except ImportError as e:  # pragma: no cover - depends on the build environment
    raise SystemExit(
        "error: building edge_runtime needs Cython>=3.0 (pyproject.toml's build-system requires it; "
        "with --no-build-isolation install it first: pip install 'Cython>=3.0')") from e

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.join(HERE, "kernels")
INCLUDE = os.path.join(HERE, "build", "cython_include")
DEBUG_BUILD = os.environ.get("EDGE_RUNTIME_DEBUG_BUILD", "").strip() not in ("", "0")


def _mirror_pxd():
    pkg = os.path.join(INCLUDE, "edge_runtime")
    os.makedirs(pkg, exist_ok=True)
    open(os.path.join(pkg, "__init__.pxd"), "w").close()
    for name in os.listdir(KERNELS):
        if name.endswith(".pxd"):
            shutil.copyfile(os.path.join(KERNELS, name), os.path.join(pkg, name))


def _kernel_sources():
    """``kernels/*.pyx``; an error when there are none (a source tree or sdist without them
    would otherwise build a pure-Python wheel that fails at ``import edge_runtime._engine``)."""
    names = sorted(n for n in os.listdir(KERNELS) if n.endswith(".pyx")) if os.path.isdir(KERNELS) else []
    if not names:
        raise SystemExit(f"error: no Cython kernels (kernels/*.pyx) under {HERE}: this source tree or sdist is "
                         "incomplete; build from a git checkout or a complete sdist")
    return names


def _extensions():
    compile_args, link_args = ["-O3"], []
    if sys.platform != "win32":
        # No -march=native: wheels must run on any CPU of the architecture.
        compile_args += ["-fno-math-errno", "-ffp-contract=fast"]
        if not DEBUG_BUILD:
            compile_args.append("-g0")   # after Python's own CFLAGS (which hold -g): this one wins
            if sys.platform.startswith("linux"):
                link_args.append("-s")
    exts = []
    for name in _kernel_sources():
        mod = name[:-4]
        exts.append(
            Extension(
                f"edge_runtime.{mod}",
                [os.path.join("kernels", name)],
                include_dirs=[np.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=compile_args,
                extra_link_args=link_args,
                libraries=["m"] if sys.platform != "win32" else [],
            )
        )
    return exts


class build_ext_checked(build_ext):
    """``build_ext`` that fails unless every kernel's extension module file was written."""

    def run(self):
        super().run()
        missing = [ext.name for ext in self.extensions if not os.path.isfile(self.get_ext_fullpath(ext.name))]
        if missing:
            raise SystemExit(f"error: extension modules not built: {', '.join(missing)}")


def _data_dir(name: str) -> str:
    src = os.path.join(HERE, name)
    if not os.path.isdir(src):
        raise SystemExit(f"error: {name}/ is missing under {HERE}: the package would install without it; "
                         "build from a git checkout or a complete sdist")
    return src


class build_py_with_configs(build_py):
    """Ship ``configs/`` inside the package as ``edge_runtime/_configs`` and ``models_int8/`` as
    ``edge_runtime/_models`` (wheels and non-editable installs have no source tree to find them
    in; the sdist carries both folders, MANIFEST.in)."""

    def run(self):
        super().run()
        src = _data_dir("configs")
        dst = os.path.join(self.build_lib, "edge_runtime", "_configs")
        for root, _dirs, files in os.walk(src):
            rel = os.path.relpath(root, src)
            for name in files:
                if name.endswith(".toml"):
                    os.makedirs(os.path.join(dst, rel), exist_ok=True)
                    shutil.copyfile(os.path.join(root, name), os.path.join(dst, rel, name))
        # the shipped models and their manifest, as edge_runtime/_models
        src = _data_dir("models_int8")
        dst = os.path.join(self.build_lib, "edge_runtime", "_models")
        shutil.copytree(src, dst, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.md", "*.json", "__pycache__"))


EXTENSIONS = _extensions()
_mirror_pxd()
setup(
    cmdclass={"build_py": build_py_with_configs, "build_ext": build_ext_checked},
    ext_modules=cythonize(
        EXTENSIONS,
        include_path=[INCLUDE],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    ),
)
