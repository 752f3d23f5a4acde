"""The postgres storage backend of OmniQ (work in progress: not registered yet)."""
