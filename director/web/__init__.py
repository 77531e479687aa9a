"""The HTTP side of the daemon: Prometheus metrics (and the status page) on ``global.http.listen``.

* `director.web.tally`: counts of the events published on the daemon's bus (pure);
* `director.web.metrics`: the metric families of one scrape, from the daemon's state (pure);
* `director.web.server`: the aiohttp listener, its bearer-token check and the daemon side of
  a scrape (I/O).
"""
