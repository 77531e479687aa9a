"""The director: configuration, the IPVS planner and reconciler, the daemon and its CLI."""
