"""One module per neo-db action; the CLI in neo_db.cli only parses and dispatches."""
