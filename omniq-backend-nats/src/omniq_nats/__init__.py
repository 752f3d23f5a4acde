"""OmniQ nats backend (work in progress)."""
