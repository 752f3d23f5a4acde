"""OmniQ sqlite backend (work in progress)."""
