"""Use cases of the purge agent: runs, operator commands, projection and progress."""
