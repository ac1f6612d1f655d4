"""Environments: the Env protocol and Meta-World v3 with its tasks."""
