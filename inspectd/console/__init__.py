"""Technician console: a browser page served on the metrics port (live view, rejects, yield, latency, recipes)."""
