"""openrlhf-pilaf: a plugin for OpenRLHF (the one release named by `SUPPORTED_OPENRLHF`).

On a GPU cluster: `pip install openrlhf-pilaf` next to an existing `openrlhf[vllm]` of that release.
On a CPU machine (tests, demo): `make install` installs the pinned CPU stack first
(see requirements/ and the Makefile), because OpenRLHF's own pins (flash-attn, a CUDA vLLM)
cannot be installed there.
"""

import ast
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def _package_constant(name: str, module: str = "__init__.py") -> str:
    """A string constant of openrlhf_pilaf/<module>, read without importing the package."""
    tree = ast.parse((ROOT / "openrlhf_pilaf" / module).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError(f"no {name} in openrlhf_pilaf/{module}")


setup(
    name="openrlhf-pilaf",
    version=_package_constant("__version__"),
    description="PILAF preference sampling, interpolated decoding and SALSA soup references for OpenRLHF",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["openrlhf_pilaf", "openrlhf_pilaf.*"]),
    # openrlhf_pilaf/patches is a symlink to the top-level patches/ (the one source); the build
    # follows it and copies the files into the wheel, where importlib.resources finds them.
    package_data={"openrlhf_pilaf": ["patches/*.patch"]},
    include_package_data=False,
    install_requires=[
        # Exactly the release our patches and OpenRLHF-facing code are tested against (one place:
        # openrlhf_pilaf.SUPPORTED_OPENRLHF, also checked at start-up by require_supported_openrlhf).
        f"openrlhf=={_package_constant('SUPPORTED_OPENRLHF')}",
        "torch>=2.4",
        "transformers>=5.15",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "tqdm",
    ],
    extras_require={
        # interpolated decoding inside OpenRLHF's vLLM rollout engines: the releases the suite has run
        # against (docs/compatibility.md), stated once in engines/vllm_interp/runner.py (the check uses it)
        "vllm": [f"vllm{_package_constant('SUPPORTED_VLLM', 'engines/vllm_interp/runner.py')}"],
        # the fused sampling kernel (present with any CUDA build of torch)
        "triton": ["triton>=3.0"],
        "test": ["pytest>=8", "scipy>=1.11", "ruff>=0.6", "matplotlib>=3.7"],
        # the reward-KL / J figures of `python -m openrlhf_pilaf.cli.plot`
        "plot": ["matplotlib>=3.7"],
    },
    entry_points={
        "console_scripts": [
            "openrlhf-pilaf-patch=openrlhf_pilaf.cli.apply_patches:main",
            "openrlhf-pilaf-check=openrlhf_pilaf.cli.check:main",
            "openrlhf-pilaf-soup=openrlhf_pilaf.cli.build_soup:main",
            "openrlhf-pilaf-ppo=openrlhf_pilaf.cli.train_ppo_ray:main",
            "openrlhf-pilaf-dpo=openrlhf_pilaf.cli.train_dpo_ray:main",
            "openrlhf-pilaf-plot=openrlhf_pilaf.cli.plot:main",
            "openrlhf-pilaf-evaluate=openrlhf_pilaf.cli.evaluate:main",
            "openrlhf-pilaf-analyze-pairs=openrlhf_pilaf.cli.analyze_pairs:main",
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
