"""Health checks of real servers.

One module per check type (`tcp`, `http`, `external`) behind one small
interface (`base`), and an engine (`engine`) that runs every check concurrently
on one asyncio loop and reports only up/down transitions after rise/fall
counting.  Nothing here knows about IPVS: the director turns transitions into
weights.
"""
