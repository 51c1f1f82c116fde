"""HTTP endpoints of the sequence service."""
