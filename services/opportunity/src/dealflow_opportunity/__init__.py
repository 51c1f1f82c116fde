"""The opportunity service: deals, their stage machine, owners, notes and sales history."""
