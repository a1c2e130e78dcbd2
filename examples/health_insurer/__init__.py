"""Sample health insurer: a SQL database (SQLite file for the demo, or PostgreSQL)."""
