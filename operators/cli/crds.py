"""`sluice crds`: print, write or check the CustomResourceDefinitions."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from operators.api.crdgen import render_crds, stale_crds, write_crds


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "crds",
        help="generate the CRDs from the API models",
        description="Print the CRDs (generated from the pydantic API models) to stdout, write them into a "
        "directory, or check that a directory holds them up to date.",
    )
    parser.add_argument("--output-dir", metavar="DIR", help="write one YAML file per CRD into DIR")
    parser.add_argument(
        "--check",
        nargs="?",
        const="crds",
        metavar="DIR",
        help="exit 1 if DIR (default: crds) is missing a CRD or holds a stale one",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.check:
        stale = stale_crds(args.check)
        if stale:
            print(f"stale CRDs in {args.check}/: {', '.join(stale)}", file=sys.stderr)
            print(f"regenerate them with: sluice crds --output-dir {args.check}", file=sys.stderr)
            return 1
        print(f"{args.check}/ is up to date")
        return 0
    if args.output_dir:
        for path in write_crds(args.output_dir):
            print(f"wrote {path}")
        return 0
    sys.stdout.write("---\n".join(render_crds().values()))
    return 0
