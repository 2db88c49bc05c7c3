"""Sessions: persisted chat history behind the `SessionStore` protocol (SQLite today)."""
