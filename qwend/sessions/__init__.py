"""Sessions and what else a daemon keeps in its database (tool switches, stored responses): one `Database`
(database.py) with a narrow store for each, on SQLite or, to share between daemons, PostgreSQL."""
