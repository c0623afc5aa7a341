"""Training job handlers: load rows by id and call training services."""
