"""Helpers shared by the test suites: real PostgreSQL, real OPA, free ports."""
