"""Schemathesis configuration and hooks for tests/integration/test_fuzz.py."""
