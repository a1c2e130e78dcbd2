"""Sample welfare office: nightly CSV exports dropped into a folder."""
