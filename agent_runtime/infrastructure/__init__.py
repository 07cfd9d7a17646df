"""Adapters to the outside world: database, model endpoints."""
