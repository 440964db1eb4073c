"""Findings as HTML: each finding beside the chain diagram with its subject highlighted.

A notebook shows ``qb.diagnose(vm)`` this way; without graphviz's ``dot`` the chain is shown as text::

    >>> from qblocknb.model.doctor import Finding, Findings
    >>> "nothing wrong found" in findings_html(Findings([]))
    True
"""

from __future__ import annotations

from html import escape

from qblocknb.errors import ToolError
from qblocknb.model.chain import Chain
from qblocknb.model.doctor import Finding, Findings
from qblocknb.model.palette import ERROR, MUTED, WARN
from qblocknb.render.output import svg
from qblocknb.render.text import text

SEVERITY_COLOURS = {"error": ERROR, "warning": WARN, "info": MUTED}


def findings_html(findings: Findings) -> str:
    """A table: severity, what is wrong, why, what to do and the fix, then the chain with the subject marked."""
    if not len(findings):
        return "<p><b>qb.diagnose</b>: nothing wrong found.</p>"
    rows = "".join(_row(finding, findings.chains) for finding in findings)
    return f"<p><b>qb.diagnose</b>: {escape(findings.summary)}</p><table>{rows}</table>"


def _row(finding: Finding, chains: tuple[Chain, ...]) -> str:
    colour = SEVERITY_COLOURS.get(finding.severity, MUTED)
    fix = f"<br><b>fix</b>: <code>{escape(str(finding.fix))}</code>" if finding.fix else ""
    words = (
        f'<b style="color:{colour}">{escape(finding.severity)}</b> {escape(finding.kind)} '
        f"<code>{escape(finding.subject)}</code>: {escape(finding.problem)}<br>"
        f"<i>why</i>: {escape(finding.why)}<br><i>to do</i>: {escape(finding.todo)}{fix}"
    )
    return f'<tr><td style="text-align:left;vertical-align:top">{words}</td><td>{_diagram(finding, chains)}</td></tr>'


def _diagram(finding: Finding, chains: tuple[Chain, ...]) -> str:
    chain = subject_chain(finding, chains)
    if chain is None:
        return ""
    marked = [name for name in (finding.where, finding.subject) if name]
    try:
        return svg(chain, highlight=marked)
    except ToolError:
        return f"<pre>{escape(text(chain))}</pre>"


def subject_chain(finding: Finding, chains: tuple[Chain, ...]) -> Chain | None:
    """The chain a finding is about: the one holding its node, job or device; else the only one."""
    for chain in chains:
        names = {chain.device, *(name for image in chain.images for name in image.names), *(j.id for j in chain.jobs)}
        if finding.where in names or finding.subject in names:
            return chain
    return chains[0] if len(chains) == 1 else None
