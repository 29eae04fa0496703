"""Typed, frozen configuration values shared by the CLI, the agent and the monitor."""
