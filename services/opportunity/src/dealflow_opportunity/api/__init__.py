"""HTTP API of the opportunity service."""
