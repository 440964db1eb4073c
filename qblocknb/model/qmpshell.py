"""qmp-shell's line syntax, both ways: ``block-stream device=node-D job-id=job0``.

Values are ints, ``true``/``false``, JSON objects or lists, or strings;
dotted keys build nested objects, as in QEMU's own qmp-shell::

    >>> parse_line('blockdev-add driver=qcow2 node-name=node-E file.driver=file file.filename=e.qcow2')
    ('blockdev-add', {'driver': 'qcow2', 'node-name': 'node-E', 'file': {'driver': 'file', 'filename': 'e.qcow2'}})
    >>> parse_line('nbd-server-start addr={"type":"inet","data":{"host":"::","port":"49153"}}')[1]['addr']['data']
    {'host': '::', 'port': '49153'}
    >>> format_line('block-stream', {'device': 'node-D', 'job-id': 'job0'})
    'block-stream device=node-D job-id=job0'
"""

from __future__ import annotations

import json
import re

from qblocknb.errors import InputError

_TOKEN = re.compile(r"""(?:[^\s"']|"(?:\\.|[^"])*"|'(?:\\.|[^'])*')+""")


def parse_value(text: str) -> object:
    """One value as qmp-shell reads it."""
    try:
        return int(text)
    except ValueError:
        pass
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if text[:1] in "{[":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(
                f"value {text!r} is not valid JSON",
                str(error),
                'write objects like addr={"type":"inet","data":{"host":"::","port":"10809"}}',
            ) from None
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", text[1:-1])  # \" and \\ inside quotes, as format_line writes them
    return text


def tokens(line: str) -> list[str]:
    """The line's words, quotes kept; a quote left open is refused rather than silently dropped."""
    words = _TOKEN.findall(line)
    rest = _TOKEN.sub(" ", line)
    if rest.strip():
        raise InputError(
            f"the line {line.strip()!r} has a quote that is not closed",
            f"{rest.strip()[0]} opens a value that never ends",
            "close the quote, or write the value without quotes",
        )
    return words


def parse_line(line: str) -> tuple[str, dict]:
    """Split a qmp-shell line into the command name and its arguments."""
    words = tokens(line.strip())
    if not words:
        raise InputError("the command line is empty", "", "type a QMP command such as query-block-jobs")
    command, arguments = words[0], {}
    if not re.fullmatch(r"[A-Za-z][\w-]*", command):
        raise InputError(
            f"{command!r} is not a command name",
            "a qmp-shell line starts with the command, such as block-stream",
            "write the command first, then key=value arguments",
        )
    for token in words[1:]:
        key, sep, text = token.partition("=")
        if not sep or "" in key.split("."):
            raise InputError(
                f"argument {token!r} of '{command}' is not key=value",
                "",
                "write arguments like device=node-D job-id=job0",
            )
        *parents, leaf = key.split(".")
        target = arguments
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise InputError(
                    f"key {key!r} of '{command}' nests under a value that is not an object",
                    "",
                    "give each dotted prefix only once",
                )
        if leaf in target:
            raise InputError(f"argument {key!r} of '{command}' is given twice", "", "give each argument once")
        target[leaf] = parse_value(text)
    return command, arguments


def _format_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)) or value is None:
        return json.dumps(value, separators=(",", ":"))
    text = str(value)
    if isinstance(value, str) and (re.search(r"\s|['\"\\]", text) or _reads_otherwise(text)):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _reads_otherwise(text: str) -> bool:
    """True when a string written bare would come back as something else (a number, true, JSON)."""
    try:
        return parse_value(text) != text
    except InputError:
        return True


def format_line(command: str, arguments: dict) -> str:
    """The qmp-shell line that sends ``command`` with ``arguments``."""
    parts = [command] + [f"{key}={_format_value(value)}" for key, value in arguments.items()]
    return " ".join(parts)


def format_json(command: str, arguments: dict) -> str:
    """The raw QMP JSON, indented as the seed prints it."""
    message: dict = {"execute": command}
    if arguments:
        message["arguments"] = arguments
    return json.dumps(message, indent=4)
