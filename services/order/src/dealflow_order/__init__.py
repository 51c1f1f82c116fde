"""The order service: orders created from accepted quotes."""
