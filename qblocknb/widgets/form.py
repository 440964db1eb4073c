"""The shape every command form shares: fields, a preview, the exact command, Run.

A form turns its fields into QMP arguments, checks them against the current
chain with ``qblocknb.model.predict`` and, before anything is sent, shows the
chain the command will produce, the raw QMP JSON, the qmp-shell line and the
virsh line of the same intent (``qblocknb.model.virsh``).  A bad value shows
a sentence in the form and Run sends nothing; so does a chain that gives the
command nothing to work on (a single image to stream).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Hashable, Iterator
from html import escape
from typing import Any

import ipywidgets as widgets

from qblocknb.errors import Error, InputError
from qblocknb.live.jobs import Job
from qblocknb.model.chain import Chain, Image
from qblocknb.model.listeners import Listeners
from qblocknb.model.palette import OK
from qblocknb.model.predict import Prediction, predict
from qblocknb.model.qmpshell import format_json, format_line
from qblocknb.model.sizes import parse_size
from qblocknb.widgets.html import code_html, diagram_html, error_html, note_html

NONE = "(none)"


def node_options(images: tuple[Image, ...] | list[Image]) -> list[tuple[str, str]]:
    """Dropdown entries ``node-B (b.qcow2)`` -> ``node-B``; a node QEMU named itself shows as its file."""
    return [
        (image.name if image.automatic else f"{image.node_name} ({image.name})", image.node_name)
        for image in images
        if image.node_name
    ]


def chain_shape(chain: Chain) -> Hashable:
    """What a form depends on: files, nodes, backing links, bitmaps, other nodes; not sizes or progress."""
    images = tuple(
        (i.file, i.node_name, i.backing_file, i.device, tuple(b.name for b in i.bitmaps)) for i in chain.images
    )
    return images, tuple(i.node_name for i in chain.other_nodes), chain.device


class CommandForm(widgets.VBox):
    """Base of the seed-command forms; subclasses say which fields exist and how they become arguments."""

    commands: tuple[str, ...] = ()
    title = ""

    def __init__(self, vm, chain: Chain | None = None) -> None:
        self.vm = vm
        self.chain = chain if chain is not None else vm.chain()
        self.active = True  # a hidden form skips its preview until it is shown again
        self.listeners = Listeners()  # called with what Run returned
        self.result: Any = None
        self.prediction: Prediction | None = None
        self.variant = widgets.ToggleButtons(options=list(self.commands), description="command")
        self.fields: dict[str, widgets.ValueWidget] = self.build_fields()
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.error = widgets.HTML()
        self.message = widgets.HTML()
        self.command_view = widgets.HTML()
        self.preview = widgets.HTML()
        self._lock = threading.RLock()
        self._filling = False
        self._stale = False
        self._shape: Hashable = None
        self._auto: dict[str, Any] = {}  # the value each dropdown got by default, to tell it from a choice
        for field in (self.variant, *self.fields.values()):
            field.observe(self._changed, "value")
        self.run_button.on_click(lambda _button: self.run())
        header = widgets.HTML(f"<b>{escape(self.title)}</b>")
        rows = [header] + ([self.variant] if len(self.commands) > 1 else []) + list(self.fields.values())
        super().__init__(
            [*rows, self.run_button, self.error, self.message, self.command_view, self.preview],
        )
        self.add_class("qb-form")
        self.set_chain(self.chain, force=True)

    # -- for subclasses ---------------------------------------------------------------------
    def build_fields(self) -> dict[str, widgets.ValueWidget]:
        raise NotImplementedError

    def fill(self, chain: Chain) -> None:
        """Set dropdown options from ``chain``, keeping the user's choices that are still valid."""
        raise NotImplementedError

    def arguments(self) -> dict:
        """The QMP arguments the fields describe; InputError for a value that cannot work."""
        raise NotImplementedError

    def nothing_to_do(self, chain: Chain) -> str | None:
        """Why ``chain`` gives this command nothing to work on (one image: nothing to stream), else None."""
        return None

    def after_run(self, result: Any) -> None:
        """Fresh defaults for the next run (a new job id, a new file name)."""
        if "job-id" in self.fields:
            self.fields["job-id"].value = self.vm.next_job_id()

    # -- shared -----------------------------------------------------------------------------
    def offer(self, name: str, options: list, default: Any) -> None:
        """New dropdown options: a value the user picked stays while it is offered; others follow ``default``."""
        field = self.fields[name]
        values = [value for _, value in options] if options and isinstance(options[0], tuple) else list(options)
        current = field.value
        picked = name in self._auto and current != self._auto[name] and current in values
        choice = current if picked else (default if default in values else (values or [None])[0])
        if list(field.options) != list(options):
            field.options = options
        field.value = choice
        if not picked:
            self._auto[name] = choice

    @property
    def command(self) -> str:
        return self.variant.value or self.commands[0]

    def set_chain(self, chain: Chain, force: bool = False) -> None:
        """Take a new chain (safe from a worker thread); redraw only when its shape changed."""
        with self._lock:
            self.chain = chain
            shape = (chain_shape(chain), tuple(sorted(self._running())))
            if shape == self._shape and not force:
                return
            self._shape = shape
            with self._quietly():
                self.fill(chain)
            if self.active:
                self.update()
            else:
                self._stale = True

    def show(self, active: bool = True) -> None:
        """Mark the form as visible (or hidden); a visible stale form redraws."""
        self.active = active
        if active and self._stale:
            self.update()

    def check(self) -> Prediction:
        """The arguments, checked and with their predicted result; raises InputError."""
        return predict(
            self.chain,
            self.command,
            self.arguments(),
            running_jobs=self._running(),
            cwd=self.vm.cwd,
        )

    def update(self) -> Prediction | None:
        """Redraw the command and the preview, or show why the fields cannot work."""
        with self._lock:
            self._stale = False
            idle = self.nothing_to_do(self.chain)
            if idle:  # a plain sentence, not an error, and no command to send
                self.prediction = None
                self.error.value = note_html(idle)
                self.command_view.value = ""
                self.preview.value = ""
                return None
            try:
                prediction = self.check()
            except Error as error:
                self.prediction = None
                self.error.value = error_html(error)
                self.command_view.value = ""
                self.preview.value = ""
                return None
            self.prediction = prediction
            self.error.value = ""
            virsh = self.vm.virsh.line(self.command, prediction.arguments, self.chain)
            self.command_view.value = (
                code_html(format_json(self.command, prediction.arguments))
                + code_html("(QEMU) " + format_line(self.command, prediction.arguments))
                + (code_html("(virsh) " + virsh) if virsh else "")
            )
            during = diagram_html(prediction.during, "While it runs") if prediction.during is not None else ""
            after = diagram_html(prediction.after, f"Then, {prediction.note}", diff_from=self.chain)
            self.preview.value = during + after
            return prediction

    def run(self) -> Any:
        """Check against a fresh chain, then send; errors show inline and send nothing."""
        self.message.value = ""
        try:
            self.set_chain(self.vm.chain())
            idle = self.nothing_to_do(self.chain)
            if idle:
                self.error.value = note_html(idle)
                return None
            prediction = self.check()
        except Error as error:
            self.error.value = error_html(error)
            return None
        try:
            result = self.vm.execute(self.command, prediction.arguments)
        except Error as error:
            self.error.value = error_html(error)
            return None
        self.result = result
        what = f"started job {result.id}" if isinstance(result, Job) else "done"
        self.message.value = note_html(f"{self.command} sent: {what}", OK)
        with self._quietly():
            self.after_run(result)
            self._auto = {name: field.value for name, field in self.fields.items()}  # back to defaults
        self.listeners.notify(result)
        with contextlib.suppress(Error):  # QEMU may be gone; the next refresh says so
            self.set_chain(self.vm.chain(), force=True)
        return result

    def set_usable(self, why_not: str | None) -> None:
        """Disable Run and say why while QEMU cannot take commands (gone, closed, stopped); ``None`` enables it."""
        self.run_button.disabled = why_not is not None
        self.run_button.button_style = "" if why_not else "primary"
        self.message.value = error_html(why_not) if why_not else ""

    def _running(self) -> set[str]:
        return {job.id for job in self.vm.job_list if not job.ended}

    def _changed(self, _change: dict) -> None:
        if self._filling:
            return
        with self._quietly():
            self.fill(self.chain)  # choices may depend on each other (the base lies below the top)
        self.update()

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        with self._lock:
            filling, self._filling = self._filling, True
            try:
                yield
            finally:
                self._filling = filling


# -- field helpers ----------------------------------------------------------------------------------
def dropdown(description: str, options: list | None = None) -> widgets.Dropdown:
    return widgets.Dropdown(options=options or [], description=description, style={"description_width": "120px"})


def text(description: str, value: str = "", placeholder: str = "") -> widgets.Text:
    return widgets.Text(
        value=value, description=description, placeholder=placeholder, style={"description_width": "120px"}
    )


def job_arguments(fields: dict[str, widgets.ValueWidget]) -> dict:
    """``job-id`` and ``speed`` (only when set) from the common fields."""
    job_id = fields["job-id"].value.strip()
    if not job_id:
        raise InputError("the job id is empty", "QEMU needs one to name the job", "type one, such as job0")
    arguments: dict = {"job-id": job_id}
    speed = parse_size(fields["speed"].value.strip() or 0)
    if speed:
        arguments["speed"] = speed
    return arguments


def optional(value: Any) -> Any:
    """Dropdown value for "not given"."""
    return None if value in (NONE, "", None) else value
