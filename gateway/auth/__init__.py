"""Authentication: human users (officers, auditors, admins) and department systems."""
