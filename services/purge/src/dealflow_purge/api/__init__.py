"""HTTP API of the purge service (operators)."""
