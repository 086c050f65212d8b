"""MkDocs hooks (mkdocs.yml `hooks:`): Sphinx roles in docstrings, shown as plain code.

The code's docstrings say :class:`Processor` and :meth:`Processor.prepare`, as Sphinx
would read them; mkdocstrings renders the role's name literally before the code span.
"""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|data|obj|exc):(<code>)")


def on_page_content(html: str, **kwargs) -> str:
    return ROLE.sub(r"\1", html)
