"""Probe each QEMU version for the features the seed and the toolkit rely on; write docs/compatibility.md.

    python tools/compatibility.py                       # probe 7.2 (system), 10.0 and 11.1 (build/qemu/*/bin)
    python tools/compatibility.py --suite               # also run the suite on each (browser test aside)
    python tools/compatibility.py --write docs/compatibility.md

Every cell comes from a real QEMU of that version: its schema (``query-qmp-schema``), its command list,
what its HMP ``qemu-io`` answers, and what outside readers see of a finished ``blockdev-backup``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import qblocknb as qb  # noqa: E402
from qblocknb.live import images  # noqa: E402

VERSIONS = {"7.2": None, "10.0": ROOT / "build/qemu/10.0/bin", "11.1": ROOT / "build/qemu/11.1/bin"}


def use(bin_dir: Path | None, base_path: str) -> None:
    """Put this version's wrappers first on PATH (None: the system's QEMU)."""
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{base_path}" if bin_dir else base_path


def deprecated(schema: dict, command: str) -> str:
    entry = schema.get(command)
    if entry is None:
        return "removed"
    return "deprecated" if "deprecated" in entry.get("features", []) else "yes"


def member_type(schema: dict, type_name: str, member: str) -> dict:
    """The schema entry of a member's type (query-qmp-schema hides type names behind numbers)."""
    entry = schema.get(type_name, {})
    for field in entry.get("members", []):
        if field["name"] == member:
            found = schema.get(field["type"], {})
            return schema.get(found.get("element-type"), found) if found.get("meta-type") == "array" else found
    return {}


def has_member(schema: dict, type_name: str, member: str) -> bool:
    return any(field["name"] == member for field in schema.get(type_name, {}).get("members", []))


def probe(lab: qb.Lab) -> dict[str, str]:
    """One QEMU of the version on PATH: its features, as the table's cells."""
    lab.create("a.qcow2", size="8M")
    lab.write("a.qcow2", 0, "1M", pattern=0xA1)
    vm = lab.launch("a.qcow2")
    raw = vm.query("query-qmp-schema")
    by_name = {entry["name"]: entry for entry in raw}
    commands = {entry["name"]: entry for entry in raw if entry.get("meta-type") == "command"}
    version = vm.query("query-version")["qemu"]
    cells = {"QEMU": f"{version['major']}.{version['minor']}.{version['micro']}"}
    for command in ("drive-mirror", "drive-backup", "blockdev-snapshot-sync", "nbd-server-add", "block-export-add"):
        cells[f"`{command}`"] = deprecated(commands, command)
    cells["`x-debug-query-block-graph`"] = "yes" if "x-debug-query-block-graph" in commands else "no"
    backup = commands["blockdev-backup"]["arg-type"]
    cells["backup sync modes"] = ", ".join(member_type(by_name, backup, "sync").get("values", []))
    cells["backup `bitmap-mode`"] = "yes" if has_member(by_name, backup, "bitmap-mode") else "no"
    node_info = by_name.get(commands["query-named-block-nodes"]["ret-type"], {}).get("element-type", "")
    named_children = has_member(by_name, node_info, "children")
    cells["named `children` in query-named-block-nodes"] = "yes" if named_children else "no"
    cells["HMP qemu-io verdict"] = hmp_verdict(vm)
    cells["backup target read after `stop` alone"] = backup_target_after_stop(lab, vm)
    cells["seed's `-qmp ...,server,nowait`"] = legacy_qmp_syntax(lab)
    vm.quit()
    return cells


def hmp_verdict(vm: qb.Machine) -> str:
    """Where HMP qemu-io's answer goes: in the reply, or on QEMU's stdout."""
    vm.process.new_stdout()
    reply = vm.hmp('qemu-io -d /machine/peripheral/virtio0/virtio-backend "read -P 0xa1 0 64k"').strip()
    time.sleep(0.3)
    stdout = vm.process.new_stdout()
    if "read " in reply:
        return "in the reply"
    return "on QEMU's stdout" if "read " in stdout else f"not seen ({reply or 'empty reply'})"


def backup_target_after_stop(lab: qb.Lab, vm: qb.Machine) -> str:
    """A finished blockdev-backup's target, read by ``qemu-io -U`` after QMP ``stop`` and nothing else.

    The disk's first node has become a backing node through a snapshot first: that is when 10.0's ``stop``
    was seen to leave the target's metadata unwritten. The backup is sent raw (``vm.send``), so the toolkit's
    own flush at the job's end does not hide what QEMU does.
    """
    vm.blockdev_snapshot_sync(node_name="node-A", snapshot_file=str(lab.file("b.qcow2")), snapshot_node_name="node-B")
    images.create(lab.file("e.qcow2"), "8M")
    vm.blockdev_add(driver="qcow2", node_name="target", file={"driver": "file", "filename": str(lab.file("e.qcow2"))})
    job = vm.expect_job("blockdev-backup", {"device": "node-B", "target": "target", "sync": "full", "job-id": "b0"})
    vm.send("blockdev-backup", job.arguments)
    deadline = time.monotonic() + 60
    while not job.ended and time.monotonic() < deadline:
        time.sleep(0.01)
    vm.query("stop")
    after_stop = lab.read_matches("e.qcow2", 0, "1M", 0xA1)
    vm.flush()
    after_flush = lab.read_matches("e.qcow2", 0, "1M", 0xA1)
    return f"{'right' if after_stop else 'wrong (zeros)'}; after vm.flush(): {'right' if after_flush else 'wrong'}"


def legacy_qmp_syntax(lab: qb.Lab) -> str:
    """Does QEMU still start with the seed's ``-qmp unix:PATH,server,nowait``?"""
    socket = lab.path / "legacy.sock"
    process = subprocess.Popen(
        ["qemu-system-x86_64", "-M", "none", "-display", "none", "-qmp", f"unix:{socket},server,nowait", "-S"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 5
    while process.poll() is None and not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = process.poll() is None
    process.kill()
    _, err = process.communicate()
    warning = "deprecat" in err.lower() or "short-form" in err.lower()
    return ("starts" + (", with a deprecation warning" if warning else "")) if started else "refused"


def run_suite(bin_dir: Path | None, base_path: str) -> str:
    """The suite (browser test aside) on this version: its pytest summary line."""
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{base_path}" if bin_dir else base_path)
    started = time.monotonic()
    done = subprocess.run(
        [str(ROOT / ".venv/bin/pytest"), "-q", "-p", "no:cacheprovider", "-m", "not browser and not binder_image"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    summary = lines[-1].strip("= ") if lines else f"exit {done.returncode}"
    failures = [line.split(" - ")[0] for line in done.stdout.splitlines() if line.startswith("FAILED")]
    return summary + (f" ({', '.join(failures)})" if failures else "") + f" [{time.monotonic() - started:.0f} s]"


def table(results: dict[str, dict[str, str]]) -> str:
    versions = list(results)
    rows = list(next(iter(results.values())))
    lines = ["| feature | " + " | ".join(versions) + " |", "|---|" + "---|" * len(versions)]
    lines += [f"| {row} | " + " | ".join(results[v].get(row, "") for v in versions) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="store_true", help="also run the test suite on each version")
    parser.add_argument("--write", type=Path, help="write the table into this Markdown file")
    parser.add_argument("versions", nargs="*", default=list(VERSIONS))
    options = parser.parse_args()
    base_path = os.environ["PATH"]
    results: dict[str, dict[str, str]] = {}
    for version in options.versions:
        bin_dir = VERSIONS[version]
        if bin_dir is not None and not bin_dir.exists():
            print(f"QEMU {version}: {bin_dir} is missing; run make qemu-versions first", file=sys.stderr)
            continue
        use(bin_dir, base_path)
        with qb.Lab() as lab:
            results[version] = probe(lab)
        if options.suite:
            results[version]["test suite (not browser)"] = run_suite(bin_dir, base_path)
        print(f"QEMU {version}: {results[version]}", flush=True)
    use(None, base_path)
    text = table(results)
    print(text)
    if options.write:
        write(options.write, text, options)
    return 0


def write(path: Path, text: str, options: argparse.Namespace) -> None:
    """Replace the generated table between the markers in ``path``."""
    command = "python tools/compatibility.py" + (" --suite" if options.suite else "") + f" --write {path}"
    block = f"<!-- generated by: {command} -->\n{text}\n<!-- end of generated table -->"
    current = path.read_text() if path.exists() else ""
    pattern = re.compile(r"<!-- generated by: .*?<!-- end of generated table -->", re.S)
    path.write_text(pattern.sub(lambda _: block, current) if pattern.search(current) else current + block + "\n")


if __name__ == "__main__":
    sys.exit(main())
