"""The database on the standard library's sqlite3: one file, one connection, the three stores on it."""
