"""The web dashboard: server-rendered pages served by the daemon (see docs/DESIGN.md)."""
