"""One module per CLI command; each exposes a function that does the work and returns data to print."""
