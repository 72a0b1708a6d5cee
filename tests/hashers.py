"""The password hasher of the test suite (``tests/conftest.py``)."""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's PBKDF2 at 1,000 iterations instead of 1,000,000 (half a second of CPU per hash):
    the demo venue alone hashes ten passwords, and 75 tests seed it. The algorithm and format stay
    Django's (``pbkdf2_sha256$1000$…``, the iterations in the hash), so every process verifies
    these hashes, the servers that tests start with the production settings included (which then
    re-hash at their own count on a successful sign-in, as Django does)."""

    iterations = 1_000
