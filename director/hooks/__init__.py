"""Notify hooks: programs run on HA role changes, real-server and service transitions and reloads.

* `director.hooks.plan`: which hooks an event runs, in which lane, with which environment (pure);
* `director.hooks.dispatcher`: the director's side (queues, lanes, results as events);
* `director.hooks.runner`: the process that runs them, outside the director's process tree
  (standard library only, started as a script).
"""
