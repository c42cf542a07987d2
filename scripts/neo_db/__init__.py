"""neo-db: session-aware SQLite safeguards for the NEO engine (FLAG-049, FLAG-023).

The engine process is the sole writer of the live database. Everything in this
package only ever reads the live DB (read-only connections, raw byte copies) and
writes copies: backups, snapshots and reports.
"""

__version__ = "0.1.0"
