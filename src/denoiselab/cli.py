"""The ``denoiselab`` command."""

from __future__ import annotations

import argparse
import shlex
import sys


def _profile_args(args: argparse.Namespace) -> int:
    from denoiselab import profiles

    print(shlex.join(profiles.dvc_set_args(profiles.load_profile(args.profile))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="denoiselab", description="Learned image denoising.")
    commands = parser.add_subparsers(dest="command", required=True)

    profile = commands.add_parser(
        "profile-args", help="print `dvc exp run -S` arguments for a params profile"
    )
    profile.add_argument("profile", help="a YAML file of dotted params keys, e.g. profiles/smoke.yaml")
    profile.set_defaults(handler=_profile_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
