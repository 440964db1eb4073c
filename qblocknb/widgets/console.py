"""``Console(vm)``: a qmp-shell prompt in the notebook, with history, pretty replies and live events.

Type a line as the seed writes it (``block-stream device=node-D job-id=job0``)
and press Enter or Send; the transcript shows the line, QEMU's reply as
indented JSON (or an error sentence) and every event as it arrives.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections import deque
from html import escape
from typing import Any

import ipywidgets as widgets

from qblocknb.errors import Error
from qblocknb.live.jobs import Job, event_time
from qblocknb.model.palette import DARK_BLUE, ERROR, INK, MUTED, OK, PURPLE, SUBTLE

TRANSCRIPT_STYLE = (
    "display:flex;flex-direction:column-reverse;max-height:360px;overflow-y:auto;"
    f"font-family:monospace;font-size:12px;border:1px solid {SUBTLE};padding:4px"
)


def _block(body: str, colour: str = INK) -> str:
    # A div, not a pre: JupyterLab's widget styles clip a pre's descenders inside an HTML widget.
    style = f"margin:1px 0;color:{colour};white-space:pre-wrap;font-family:monospace;font-size:12px;line-height:1.4"
    return f'<div style="{style}">{body}</div>'


def reply_json(result: Any) -> str:
    """What QEMU answered, as qmp-shell prints it; a started job shows as ``{"return": {}}``."""
    return json.dumps({"return": {} if isinstance(result, Job) else result}, indent=4)


class Console(widgets.VBox):
    """A qmp-shell-syntax prompt; ``run(line)`` does what pressing Send does."""

    def __init__(self, vm, max_entries: int = 300) -> None:
        self.vm = vm
        self.prompt = widgets.Text(
            placeholder="query-block-jobs   or   block-stream device=node-D job-id=job0",
            description="(QEMU)",
            layout={"width": "70%"},
        )
        self.send_button = widgets.Button(description="Send", button_style="primary")
        self.recall = widgets.Dropdown(options=[""], description="history")
        self.transcript = widgets.HTML()
        self.lines: list[str] = []
        self.entries: deque[str] = deque(maxlen=max_entries)
        self._lock = threading.Lock()
        self.send_button.on_click(lambda _button: self.run())
        with warnings.catch_warnings():  # Enter in the prompt; the replacement would also send on blur
            warnings.simplefilter("ignore", DeprecationWarning)
            self.prompt.on_submit(lambda _text: self.run())
        self.recall.observe(self._recalled, "value")
        super().__init__([widgets.HBox([self.prompt, self.send_button]), self.recall, self.transcript])
        self.add_class("qb-console")
        self._subscription = vm.listeners.register(self._on_event)
        self._show()

    def run(self, line: str | None = None) -> Any:
        """Send one qmp-shell line; returns QEMU's answer (a Job for job commands) or None after an error."""
        line = (line if line is not None else self.prompt.value).strip()
        if not line:
            return None
        self.prompt.value = ""
        self.lines.append(line)
        self.recall.options = ["", *reversed(self.lines)]
        self._add(_block(f"<b>(QEMU) {escape(line)}</b>"))
        try:
            result = self.vm.shell(line)
        except Error as error:
            self._add(_block(escape(str(error)), ERROR))
            return None
        self._add(_block(escape(reply_json(result)), DARK_BLUE))
        if isinstance(result, Job):
            self._add(_block(f"started job {escape(result.id)} ({escape(result.type)})", OK))
        return result

    def set_usable(self, why_not: str | None) -> None:
        """Disable the prompt and Send while QEMU cannot take commands, and say why once; ``None`` enables them."""
        disabled = why_not is not None
        if disabled and not self.send_button.disabled:
            self._add(_block(escape(why_not), ERROR))
        self.prompt.disabled = self.send_button.disabled = disabled

    def close(self) -> None:
        self._subscription.remove()
        super().close()

    def _recalled(self, change: dict) -> None:
        if change["new"]:
            self.prompt.value = change["new"]

    def _on_event(self, event: dict) -> None:
        """On the event thread: only the transcript's value changes."""
        stamp = time.strftime("%H:%M:%S", time.localtime(event_time(event) or time.time()))
        data = json.dumps(event.get("data", {}), separators=(", ", ": "))
        self._add(_block(f"{stamp} <b>{escape(event.get('event', '?'))}</b> {escape(data)}", PURPLE))

    def _add(self, entry: str) -> None:
        with self._lock:
            self.entries.append(entry)
            self._show()

    def _show(self) -> None:
        body = "".join(reversed(self.entries)) or _block("replies and events appear here", MUTED)
        self.transcript.value = f'<div class="qb-transcript" style="{TRANSCRIPT_STYLE}">{body}</div>'
