"""Health checks of real servers.

One module per check type behind one small interface (`base`, `PROTOCOL_CHECKS`): `tcp` (a
connect) and `dialogue` (its send/expect conversation, TLS, STARTTLS), `http`, `dns`, `udp`,
`ping` (over the codec of `icmp`), `radius` and `sip` (over `datagram`), `sql` (mysql, pgsql),
`ldap`, `ftp`, `external`; an agent's answers (`agent`) and the TLS contexts they share
(`tls`).  An engine (`engine`) that runs every check concurrently
on one asyncio loop and reports only up/down transitions after rise/fall
counting, and the checker process (`process`) in which the director runs that
engine, apart from its own loop.  Nothing here knows about IPVS: the director turns transitions into
weights.
"""
