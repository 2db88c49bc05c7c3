"""Sessions: persisted chat history behind the `SessionStore` protocol (SQLite, or PostgreSQL to share)."""
