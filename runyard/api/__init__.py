"""The HTTP surface: `create_app` (api.app) and `serve` (api.server)."""
