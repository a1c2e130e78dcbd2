"""The exchange: authenticate, resolve, decide, fetch, translate, release, audit, answer."""
