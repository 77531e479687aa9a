"""Health checks of real servers.

The settings of a check (`spec`), one small interface that runs a check of any type within its
time limit (`base.run_check`, `base.PROTOCOL_CHECKS`), the check of each type in `protocols`
(tcp and its dialogues, http, dns, udp, ping, radius, sip, mysql/pgsql/oracle, ldap, ftp, external, and
the agent's answers), an engine (`engine`) that runs every check concurrently on one asyncio loop
and reports only up/down transitions after rise/fall counting (and the weight changes agents ask
for), its admission control (`admission`), and the checker process (`process`) in which the
director runs that engine, apart from its own loop.  Nothing here knows about IPVS: the director
turns transitions into weights.
"""
