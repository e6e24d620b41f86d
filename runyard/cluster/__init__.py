"""Nodes asking each other for what only a run's own node has: its log, live output, process."""
