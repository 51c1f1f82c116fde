"""The purge domain: pure rules, no I/O, no clock (callers pass `now`)."""
