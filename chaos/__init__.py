"""`make chaos`: the system under one fault at a time, checked against its invariants."""
