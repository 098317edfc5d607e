"""The backend conformance suite: every backend must pass every test here."""
