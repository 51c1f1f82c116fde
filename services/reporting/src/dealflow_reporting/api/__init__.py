"""Reporting HTTP API."""
