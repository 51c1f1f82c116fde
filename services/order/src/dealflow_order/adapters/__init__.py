"""Adapters: the order service's tables and repository."""
