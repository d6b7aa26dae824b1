"""Alerts: the model the engine produces, the outbox worker, one module per channel."""
