"""Use cases and event handlers of the sequence service."""
