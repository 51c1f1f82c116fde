"""The quote service: catalog, quotes with lines, their lifecycle and the accept saga."""
