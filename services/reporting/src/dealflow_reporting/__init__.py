"""Dealflow reporting service: pipeline, forecast and analytics from the event log."""
