"""The purge agent: closed deals purged after their quotes, on a schedule."""
