"""Entry point of the nats backend (registers nothing until the backend lands)."""
