"""One module per family of commands: operands in, a :class:`~klcli.result.Result` out.

These wire io (open and stream) to the core (arithmetic) and assemble the
figures; they neither parse options nor draw anything.
"""
