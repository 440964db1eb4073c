"""The ``qblocknb`` command: ``demo`` runs the main job, ``chain IMAGE`` prints an on-disk chain, ``doctor``
examines a running VM's block layer (exit 1 when it finds an error)."""

from __future__ import annotations

import argparse
import sys

from qblocknb.errors import Error, InputError
from qblocknb.live.images import chain_from_image
from qblocknb.model.chain import Chain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qblocknb", description="QEMU live block operations, verified.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run stream, commit, mirror and backup on the seed's chain and verify the data")
    chain = commands.add_parser("chain", help="print an image's backing chain in the seed's notation")
    chain.add_argument("image")
    chain.add_argument("--long", action="store_true", help="one line per image with format and sizes")
    doctor = commands.add_parser("doctor", help="what is wrong with a running VM's block layer, and the fixes")
    doctor.add_argument("socket", nargs="?", help="the VM's QMP socket (-qmp unix:PATH,server=on,wait=off)")
    doctor.add_argument("--libvirt", metavar="DOMAIN", help="a libvirt domain instead of a socket")
    doctor.add_argument("--uri", default="qemu:///system", help="libvirt's URI (default qemu:///system)")
    doctor.add_argument("--passthrough", action="store_true", help="read QEMU through libvirt's monitor passthrough")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from qblocknb.teaching.demo import run_demo

            return 0 if run_demo() else 1
        if args.command == "doctor":
            return run_doctor(args)
        print_chain(chain_from_image(args.image), args.long)
        return 0
    except Error as error:
        print(f"qblocknb: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qblocknb: interrupted; every QEMU it started has been ended.", file=sys.stderr)
        return 130


def run_doctor(args: argparse.Namespace) -> int:
    """Print the findings of one VM; 1 when one of them is an error."""
    from qblocknb.live.attach import connect, connect_libvirt
    from qblocknb.live.diagnose import diagnose

    if bool(args.socket) == bool(args.libvirt):
        raise InputError(
            "qblocknb doctor needs one VM", "give its QMP socket, or --libvirt DOMAIN, not both", "see --help"
        )
    vm = (
        connect_libvirt(args.libvirt, args.uri, passthrough=args.passthrough)
        if args.libvirt
        else connect(args.socket, timeout=5.0)
    )
    try:
        findings = diagnose(vm)
    finally:
        vm.session.close()
    print(findings)
    return 1 if findings.errors else 0


def print_chain(chain: Chain, long: bool) -> None:
    print(chain)
    if long:
        from qblocknb.model.sizes import human_size

        for image in reversed(chain.images):
            allocated = human_size(image.allocated_size) if image.allocated_size is not None else "?"
            print(f"  {image.file}  {image.format}  virtual {human_size(image.virtual_size)}  on disk {allocated}")


if __name__ == "__main__":
    sys.exit(main())
