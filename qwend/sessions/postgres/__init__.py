"""The database on PostgreSQL (psycopg 3): several daemons share one database, and so their sessions, the order
of each session's turns (an advisory lock), which tools are switched on (LISTEN/NOTIFY) and stored responses."""
