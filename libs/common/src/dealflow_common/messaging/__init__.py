"""Reliable messaging: transactional outbox, relay, inbox-deduplicated consumers, DLQ."""
