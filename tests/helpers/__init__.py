"""Reusable test helpers (real servers in subprocesses, ...)."""
