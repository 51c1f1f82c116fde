"""Adapters: the purge service's tables, its store and the cron schedule."""
