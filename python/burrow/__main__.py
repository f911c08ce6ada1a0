"""``python -m burrow``: the package's version, or the daemon's status as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from . import __version__
from .errors import BurrowError
from .sync import Mesh


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m burrow", description="burrow's Python client (burrow-mesh)"
    )
    parser.add_argument("--version", action="version", version=f"burrow-mesh {__version__}")
    parser.add_argument("command", choices=["status", "members"], help="what to print, as JSON")
    args = parser.parse_args(argv)
    try:
        with Mesh() as mesh:
            answer = mesh.status() if args.command == "status" else mesh.members()
    except BurrowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(answer, default=dataclasses.asdict, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
