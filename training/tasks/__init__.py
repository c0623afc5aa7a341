"""Training job handlers, one module per area; each loads rows by id and calls a service."""
