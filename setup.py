"""Build the Cython kernels in ``kernels/`` as extension modules inside ``edge_runtime``.

``kernels/_name.pyx`` becomes ``edge_runtime._name``.  Kernels cimport each other as
``edge_runtime._name``, so their ``.pxd`` files are mirrored into a generated include
directory laid out as a package (Cython resolves cimports by qualified module name).
"""
import os
import shutil
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.join(HERE, "kernels")
INCLUDE = os.path.join(HERE, "build", "cython_include")


def _mirror_pxd():
    pkg = os.path.join(INCLUDE, "edge_runtime")
    os.makedirs(pkg, exist_ok=True)
    open(os.path.join(pkg, "__init__.pxd"), "w").close()
    for name in os.listdir(KERNELS):
        if name.endswith(".pxd"):
            shutil.copyfile(os.path.join(KERNELS, name), os.path.join(pkg, name))


def _extensions():
    compile_args = ["-O3"]
    if sys.platform != "win32":
        # No -march=native: wheels must run on any CPU of the architecture.
        compile_args += ["-fno-math-errno", "-ffp-contract=fast"]
    exts = []
    for name in sorted(os.listdir(KERNELS)):
        if name.endswith(".pyx"):
            mod = name[:-4]
            exts.append(
                Extension(
                    f"edge_runtime.{mod}",
                    [os.path.join("kernels", name)],
                    include_dirs=[np.get_include()],
                    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                    extra_compile_args=compile_args,
                    libraries=["m"] if sys.platform != "win32" else [],
                )
            )
    return exts


class build_py_with_configs(build_py):
    """Ship ``configs/`` inside the package as ``edge_runtime/_configs`` (wheels and
    non-editable installs have no source tree to find them in)."""

    def run(self):
        super().run()
        src = os.path.join(HERE, "configs")
        if os.path.isdir(src):
            dst = os.path.join(self.build_lib, "edge_runtime", "_configs")
            for root, _dirs, files in os.walk(src):
                rel = os.path.relpath(root, src)
                for name in files:
                    if name.endswith(".toml"):
                        os.makedirs(os.path.join(dst, rel), exist_ok=True)
                        shutil.copyfile(os.path.join(root, name), os.path.join(dst, rel, name))
        # the shipped models and their manifest, as edge_runtime/_models
        src = os.path.join(HERE, "models_int8")
        if os.path.isdir(src):
            dst = os.path.join(self.build_lib, "edge_runtime", "_models")
            shutil.copytree(src, dst, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.md", "*.json", "__pycache__"))


_mirror_pxd()
setup(
    cmdclass={"build_py": build_py_with_configs},
    ext_modules=cythonize(
        _extensions(),
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
