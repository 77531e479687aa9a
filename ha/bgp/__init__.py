"""Active-active directors: the VIPs announced over BGP by an existing routing daemon (BIRD 2).

Every director announces the VIPs it can serve to its routers, which spread the flows over the
directors by ECMP; the IPVS ``mh`` scheduler (Maglev hashing) and sloppy TCP keep a flow on the
same real server whichever director it reaches.  directord does not speak BGP itself: it writes
the configuration of a BIRD 2 it supervises, and tells it what to announce by adding and
removing routes in a kernel routing table BIRD learns from (no process spawned per change).

* `ha.bgp.model`: the ``bgp:`` section as frozen dataclasses (pure).
* `ha.bgp.bird`: BIRD's configuration rendered from the model (pure).
* `ha.bgp.policy`: which VIPs are announced, from health, drain and stop (pure).
* `ha.bgp.birdctl`: a client of BIRD's control socket, and parsers of its replies (pure).
* `ha.bgp.speaker`: the BIRD directord runs: its file, its process, its restarts.
"""
