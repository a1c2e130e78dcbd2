"""The department registry: departments, their systems and their signing keys."""
