"""Getting the engine into a database: install modes, pg_tle, the embedded server."""
