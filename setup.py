"""Accord's one C extension; everything else about the package is in pyproject.toml.

``audit._sha256`` hashes a batch of messages per call with OpenSSL's libcrypto, for
the audit verifier's bulk path. It is optional: without a C compiler or OpenSSL's
headers the build skips it and ``audit`` hashes with ``hashlib`` instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("audit._sha256", ["audit/_sha256.c"], libraries=["crypto"], optional=True)
    ]
)
