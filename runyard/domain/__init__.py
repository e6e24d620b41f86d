"""Pure domain: models, enums and policies. Imports only the standard library."""
