"""One module per resource: jobs, targets, health."""
