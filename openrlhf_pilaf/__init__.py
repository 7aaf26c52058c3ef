"""openrlhf-pilaf: preference-pair samplers, interpolated decoding and SALSA references for OpenRLHF.

Importing the top-level package is cheap on purpose: it pulls in neither OpenRLHF, vLLM, Ray nor
DeepSpeed, so that the vLLM plugin entry point and the CLIs can load it in any process.
"""

__version__ = "0.1.0"

SUPPORTED_OPENRLHF = "0.11.2"
