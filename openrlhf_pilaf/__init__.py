"""openrlhf-pilaf: preference-pair samplers, interpolated decoding and SALSA references for OpenRLHF.

Importing the top-level package is cheap on purpose: it pulls in neither OpenRLHF, vLLM, Ray nor
DeepSpeed, so that the vLLM plugin entry point and the CLIs can load it in any process.
"""

__version__ = "0.1.0"

# The one OpenRLHF release this package supports: our patches are diffs against it and our
# OpenRLHF-facing code is tested against it. setup.py pins `openrlhf==` this, and launchers check it
# at start-up (`openrlhf_pilaf.utils.openrlhf_patches.require_supported_openrlhf`).
SUPPORTED_OPENRLHF = "0.11.2"
