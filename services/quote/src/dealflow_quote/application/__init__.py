"""Use cases of the quote service, each one unit of work."""
