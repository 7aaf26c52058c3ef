"""openrlhf-pilaf: a plugin for OpenRLHF 0.11.x.

On a GPU cluster: `pip install openrlhf-pilaf` next to an existing `openrlhf[vllm]`.
On a CPU machine (tests, demo): `make install` installs the pinned CPU stack first
(see requirements/ and the Makefile), because OpenRLHF's own pins (flash-attn, a CUDA vLLM)
cannot be installed there.
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def _version() -> str:
    for line in (ROOT / "openrlhf_pilaf" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("no __version__ in openrlhf_pilaf/__init__.py")


setup(
    name="openrlhf-pilaf",
    version=_version(),
    description="PILAF preference sampling, interpolated decoding and SALSA soup references for OpenRLHF",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["openrlhf_pilaf", "openrlhf_pilaf.*"]),
    install_requires=[
        "openrlhf>=0.11.2,<0.12",
        "torch>=2.4",
        "transformers>=5.15",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "tqdm",
    ],
    extras_require={
        # interpolated decoding inside OpenRLHF's vLLM rollout engines
        "vllm": ["vllm>=0.29"],
        # the fused sampling kernel (present with any CUDA build of torch)
        "triton": ["triton>=3.0"],
        "test": ["pytest>=8", "scipy>=1.11", "ruff>=0.6"],
    },
    entry_points={
        "console_scripts": [
            "openrlhf-pilaf-patch=openrlhf_pilaf.cli.apply_patches:main",
            "openrlhf-pilaf-soup=openrlhf_pilaf.cli.build_soup:main",
            "openrlhf-pilaf-ppo=openrlhf_pilaf.cli.train_ppo_ray:main",
        ],
        # vLLM calls this in every process it starts (driver, engine core, workers), which is where
        # an out-of-tree architecture must be registered; registering in the driver alone fails.
        "vllm.general_plugins": [
            "openrlhf_pilaf=openrlhf_pilaf.engines.vllm_interp.plugin:register",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
