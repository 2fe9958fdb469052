"""The kit's core workflows, one module each; the CLI's commands call these and nothing else.

- lifecycle: init, up (preflight first, then changes), build, down, status
- preflight / doctor: read-only checks of the host and the stack
- backup, restore (+ drill), restic (the repository), lock (one per stack)
- migrate: artifacts to another store; smoke: `check`; indexes; bench
- users, tls, schedule: logins, certificates, cron
"""
