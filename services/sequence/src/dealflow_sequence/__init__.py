"""The sequence service: follow-up sequences, tasks and stale-deal alerts."""
