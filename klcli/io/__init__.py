"""Every file access: operands, readers by format, and writing results."""
