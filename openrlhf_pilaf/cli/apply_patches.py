"""`python -m openrlhf_pilaf.cli.apply_patches [--check|--revert]` (`openrlhf-pilaf-patch`): patch the
installed OpenRLHF. The CPU stack needs every patch; a GPU install needs none (see
`python -m openrlhf_pilaf.cli.check`). Exit 0 on success (`--check`: all applied), 1 when `--check`
finds a patch not applied, 2 on an error (another OpenRLHF version, foreign edits, no `patch` tool)."""

from __future__ import annotations

import argparse
import sys

from openrlhf_pilaf.utils.openrlhf_patches import (
    DEFAULT_PATCH_DIR,
    PatchError,
    apply_patches,
    openrlhf_site_dir,
    patch_files,
    patch_state,
    require_supported_openrlhf,
    revert_patches,
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--patches.dir",
        dest="patch_dir",
        default=str(DEFAULT_PATCH_DIR),
        help="directory of *.patch files (default: the patches shipped inside the package)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 unless every patch is applied")
    mode.add_argument("--revert", action="store_true", help="restore the pristine openrlhf sources")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        if args.check:
            require_supported_openrlhf()
            site = openrlhf_site_dir()
            states = {p.name: patch_state(p, site) for p in patch_files(args.patch_dir)}
            for name, state in states.items():
                print(f"{state:>12}  {name}")
            return 0 if all(s == "applied" for s in states.values()) else 1
        outcomes = (revert_patches if args.revert else apply_patches)(patch_dir=args.patch_dir)
    except PatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for o in outcomes:
        print(f"{o.state:>15}  {o.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
