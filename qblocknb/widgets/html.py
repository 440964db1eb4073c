"""Small HTML pieces the widgets put in their ``HTML`` values: errors, code, diagrams.

>>> error_html(ValueError("no such node"))
'<div class="qb-error" style="color:#a40000">⚠ no such node</div>'
>>> code_html('{"execute": "stop"}')
'<pre class="qb-code" style="margin:2px 0">{&quot;execute&quot;: &quot;stop&quot;}</pre>'
"""

from __future__ import annotations

from html import escape

from qblocknb.errors import ToolError
from qblocknb.model.chain import Chain
from qblocknb.model.palette import ERROR, GREY
from qblocknb.render import svg, text

FIT_STYLE = "max-width:100%;height:auto"  # keeps the aspect ratio: graphviz writes a viewBox


def error_html(error: BaseException | str) -> str:
    """An error as one red sentence."""
    return f'<div class="qb-error" style="color:{ERROR}">⚠ {escape(str(error))}</div>'


def note_html(message: str, colour: str = GREY) -> str:
    return f'<div class="qb-note" style="color:{colour}">{escape(message)}</div>'


def code_html(source: str) -> str:
    return f'<pre class="qb-code" style="margin:2px 0">{escape(source)}</pre>'


def diagram_html(chain: Chain, caption: str = "", fit: bool = False, **options) -> str:
    """The chain as inline SVG; as text plus the install line when graphviz's dot is missing.

    With ``fit`` a wide diagram shrinks to the width it is given instead of being cut off or scrolled.
    """
    try:
        body = svg(chain, **options)
        if fit:
            body = body.replace("<svg", f'<svg style="{FIT_STYLE}"', 1)
    except ToolError as error:
        body = code_html(text(chain, **options)) + note_html(str(error))
    title = f'<div class="qb-caption" style="font-weight:bold">{escape(caption)}</div>' if caption else ""
    return f'<div class="qb-diagram" style="overflow-x:auto">{title}{body}</div>'
