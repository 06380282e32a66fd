"""Renderers of one :class:`~parity.compare.diff.TraceDiff`: terminal text, JSON, Markdown, HTML
(and, in :mod:`.localize`, of a :class:`~parity.localize.local.Localization`).

Every renderer reads the same result type, so a diff computed once (or read back from its JSON
with :meth:`TraceDiff.from_dict`) can be shown in any form. The Markdown and HTML reports reopen
the traces named in the diff (``traces=AUTO``) to list each divergent stage's worst elements and,
in HTML, to plot error histograms and heat maps.
"""

from ._arrays import AUTO, SAVED, stage_worst
from .html import render_html
from .json import diff_schema, load_result, render_json, validate_diff_document
from .localize import render_localize_html, render_localize_markdown, render_localize_text
from .markdown import render_markdown
from .progress import progress_bar
from .text import render_text
from .worst import WorstElement, worst_elements

__all__ = ["render_text", "render_json", "render_markdown", "render_html", "diff_schema", "validate_diff_document",
           "worst_elements", "WorstElement", "stage_worst", "progress_bar", "AUTO", "SAVED", "load_result",
           "render_localize_text", "render_localize_markdown", "render_localize_html"]
