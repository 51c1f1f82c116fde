"""Adapters: the quote service's tables, repositories, buy-now links and handlers."""
