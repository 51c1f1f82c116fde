"""Use cases of the opportunity service, each one unit of work."""
