"""One module per command: a docstring (the help), add_arguments(parser), run(doc, args) -> doc.

Stages never print to stdout; cli.py writes the document they return.
"""
