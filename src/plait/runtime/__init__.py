"""Runs a compiled workflow: scheduler, batch, executors, events."""
