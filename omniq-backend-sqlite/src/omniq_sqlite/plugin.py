"""Entry point of the sqlite backend (registers nothing until the backend lands)."""
