"""Pure rules of the sequence service: no I/O, no clock (callers pass `now`)."""
