"""Integrations that expose a pixelagent session as a tool of another agent framework."""
