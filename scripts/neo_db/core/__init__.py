"""The services the commands in actions/ share: the verified-copy pipeline, the gates, health records,
retention, session IDs, the install and recovery of a DB. Nothing here imports from actions/."""
