"""Services: long-running programs supervised beside tasks (see docs/services.md)."""
