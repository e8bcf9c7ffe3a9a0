"""The compute core: pure NumPy, no files, no terminals (ARCHITECTURE rule 1)."""
