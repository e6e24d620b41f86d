"""Notifications: routed, folded and delivered through Apprise, kept in the store."""
