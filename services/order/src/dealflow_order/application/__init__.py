"""Use cases of the order service."""
