"""The Dealflow web console: a static single-page app and the gateway it talks through."""
