"""The ``accord`` command line: one CLI for administrators, officers, auditors and departments."""
