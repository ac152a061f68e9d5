"""Importable handler modules for the subprocess tests (``catbird worker tests.workers.x:y``)."""
