"""The ``qblocknb`` command: ``demo`` runs the main job, ``chain IMAGE`` prints an on-disk chain."""

from __future__ import annotations

import argparse
import sys

from qblocknb.errors import Error
from qblocknb.live.images import chain_from_image
from qblocknb.model.chain import Chain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qblocknb", description="QEMU live block operations, verified.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run stream, commit, mirror and backup on the seed's chain and verify the data")
    chain = commands.add_parser("chain", help="print an image's backing chain in the seed's notation")
    chain.add_argument("image")
    chain.add_argument("--long", action="store_true", help="one line per image with format and sizes")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from qblocknb.teaching.demo import run_demo

            return 0 if run_demo() else 1
        print_chain(chain_from_image(args.image), args.long)
        return 0
    except Error as error:
        print(f"qblocknb: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qblocknb: interrupted; every QEMU it started has been ended.", file=sys.stderr)
        return 130


def print_chain(chain: Chain, long: bool) -> None:
    print(chain)
    if long:
        from qblocknb.model.sizes import human_size

        for image in reversed(chain.images):
            allocated = human_size(image.allocated_size) if image.allocated_size is not None else "?"
            print(f"  {image.file}  {image.format}  virtual {human_size(image.virtual_size)}  on disk {allocated}")


if __name__ == "__main__":
    sys.exit(main())
