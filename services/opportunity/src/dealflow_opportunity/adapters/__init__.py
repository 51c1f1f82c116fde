"""Adapters: the opportunity's tables and repository, and its event handlers."""
