"""``python -m omniq_postgres show|apply URL``: show or apply the schema migrations
(the same as ``omniq migrations show|apply --url URL``).

``show`` lists each migration with whether it is applied to the URL's schema
(``?schema=...``, default ``omniq``); ``apply`` applies the missing ones under the
advisory lock (what the first connection does anyway). Exit status 0, or 2 for bad
usage. Passwords are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from omniq.errors import OmniQError
from omniq_postgres._database import migration_report
from omniq_postgres._url import parse


async def _run(command: str, url: str) -> int:
    opts = parse(url)
    done, states = await migration_report(opts, apply=command == "apply")
    if command == "apply":
        print(f"{opts.url}: applied {done or 'nothing (up to date)'}")
    print(f"schema {opts.schema} at {opts.url}:")
    for version, name, applied in states:
        print(f"  {version:>3}  {'applied' if applied else 'pending'}  {name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m omniq_postgres", description=__doc__)
    parser.add_argument("command", choices=["show", "apply"])
    parser.add_argument("url", help="postgresql://user@host:5432/db?schema=omniq")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_run(args.command, args.url))
    except OmniQError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
