"""Health checks of real servers.

One module per check type (`tcp`, `http`, `external`) behind one small
interface (`base`), an engine (`engine`) that runs every check concurrently
on one asyncio loop and reports only up/down transitions after rise/fall
counting, and the checker process (`process`) in which the director runs that
engine, apart from its own loop.  Nothing here knows about IPVS: the director turns transitions into
weights.
"""
