"""Reporting adapters: tables, the read model store, the replay."""
