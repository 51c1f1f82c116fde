"""Running Dealflow on one machine: the embedded broker and the service processes."""
