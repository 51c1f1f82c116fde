"""Adapters: the sequence service's tables and repositories."""
