"""Griffe extension for the API reference: read the docstrings' "Example:" sections as "Examples:".

The package's Google-style docstrings head their doctests "Example:", which Griffe renders as a
plain admonition (the >>> lines turn into Markdown quotes); "Examples:" makes them code blocks.
"""

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", flags=re.M)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
