"""Sample civil registry: a REST/JSON API over its own SQLite database."""
