"""``python -m diffrecon.methods``: print the method table of ``docs/methods.md``."""

from diffrecon.methods import markdown_table

print(markdown_table(), end="")
