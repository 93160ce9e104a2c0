"""Storage: SQLAlchemy models, sessions, the run queue and queries.

The only package that writes SQL."""
