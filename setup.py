"""Installs the ``mmdet3d`` package (SimDistill re-implementation).

The CUDA extension ``mmdet3d._ext`` is compiled from ``mmdet3d/ops/*/src`` when a CUDA toolkit and a CUDA-enabled
torch are present, or always with ``FORCE_CUDA=1``. Without them the package installs without the extension and
every op runs its pure-PyTorch path.
"""
import glob
import os

from setuptools import find_packages, setup

DEFAULT_ARCHS = "8.0;8.6;8.9;9.0"
DEPLOY_REQUIRES = ["onnx>=1.16", "onnxscript>=0.5", "onnxruntime>=1.18", "ml_dtypes>=0.5,<0.6"]


def cuda_extensions():
    sources = sorted(glob.glob("mmdet3d/ops/*/src/*.cpp") + glob.glob("mmdet3d/ops/*/src/*.cu"))
    if not sources:
        return [], {}
    # torch guesses CUDA_HOME from the nvcc on PATH, which is wrong when that nvcc is a wrapper script outside the
    # toolkit (e.g. /usr/local/bin/nvcc -> CUDA_HOME=/usr/local, no libcudart): pick a folder that holds the
    # toolkit's headers before torch.utils.cpp_extension reads the variable.
    if not os.environ.get("CUDA_HOME") and not os.environ.get("CUDA_PATH"):
        import shutil

        nvcc = shutil.which("nvcc")
        candidates = ([os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []) + ["/usr/local/cuda"]
        for home in candidates:
            if os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")):
                os.environ["CUDA_HOME"] = home
                break
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        return [], {}
    forced = os.environ.get("FORCE_CUDA", "0") == "1"
    if not forced and not (torch.cuda.is_available() and CUDA_HOME is not None):
        return [], {}
    if CUDA_HOME is None:
        raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME)")
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    ext = CUDAExtension(
        name="mmdet3d._ext",
        sources=sources,
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--use_fast_math", "-lineinfo"]},
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = cuda_extensions()

setup(
    name="simdistill",
    version="0.1.0",
    description="SimDistill: camera-only BEV 3D detection distilled from a LiDAR-camera teacher (BEVFusion fork)",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["mmdet3d", "mmdet3d.*"]),
    package_data={"mmdet3d": ["ops/*/src/*"]},
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "numpy>=1.24,<2",
        "mmengine>=0.10,<0.11",
        "torchpack>=0.3.1",
        "nuscenes-devkit>=1.1.11,<1.3",
        "numba>=0.58",
        "Pillow>=9",
        "tqdm>=4.60",
        "pyyaml>=6",
        "tensorboard>=2.12",
        "shapely>=2",
    ],
    # deploy: ONNX export (torch's exporter needs onnxscript) and onnxruntime; ml_dtypes < 0.6 keeps numpy < 2 working.
    extras_require={"spconv": ["spconv>=2.3.6"],
                    "deploy": DEPLOY_REQUIRES,
                    "test": ["pytest>=7", "pytest-xdist>=3"] + DEPLOY_REQUIRES},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
