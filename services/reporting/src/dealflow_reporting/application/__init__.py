"""Reporting use cases: projection handlers, queries, snapshots, rebuild."""
