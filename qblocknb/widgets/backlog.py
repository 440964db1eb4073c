"""The job monitor's backlog line: how much a mirror (or active commit) still has to copy, and its trend.

A mirror that never reaches READY is usually one whose guest writes faster than its target takes data: the line
says so while the backlog is not shrinking, and names the way out (``copy-mode=write-blocking``).
"""

from __future__ import annotations

from html import escape

from qblocknb.live.jobs import Job
from qblocknb.model.palette import ERROR, GREY
from qblocknb.model.sizes import human_size

FOLLOWS_WRITES = ("mirror", "commit")  # jobs whose len grows with the guest's writes


def backlog_html(job: Job) -> str:
    """``dirty backlog 3 MiB · shrinking 1 MiB/s``, or a red line when it is not shrinking; empty otherwise."""
    found = job.backlog if job.type in FOLLOWS_WRITES and not job.ended and not job.ready else None
    if found is None or found.seconds <= 0:
        return ""
    text = f"dirty backlog {human_size(found.bytes)}"
    if found.shrinking:
        return f'<span style="color:{GREY}">{escape(text)} · shrinking {human_size(-found.rate)}/s</span>'
    way_out = "job.change(copy_mode='write-blocking')" if job.type == "mirror" else "a lower guest write rate"
    text += f" · not shrinking ({'+' if found.rate else ''}{human_size(found.rate)}/s): the guest writes faster "
    text += f"than the target takes them; {way_out} makes it converge"
    return f'<span style="color:{ERROR}">{escape(text)}</span>'
