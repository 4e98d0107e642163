"""Importable helpers for tests that run in subprocesses or Ray actors."""
