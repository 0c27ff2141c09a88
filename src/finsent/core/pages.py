"""HTML pages from the Jinja2 templates in finsent/templates, autoescaped, all extending base.html.j2."""

from __future__ import annotations

from functools import cache

import jinja2


@cache
def environment() -> jinja2.Environment:
    """The one template environment: package templates, autoescaping on, undefined names an error."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("finsent", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def render(template: str, **context) -> str:
    """Render one page template with its context (strings are escaped unless wrapped in markupsafe.Markup)."""
    return environment().get_template(template).render(**context)
