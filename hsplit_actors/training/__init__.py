"""Real training for `hsplit run`: hosts that keep client and server state, the executor that plugs them into the
engine, in-process and Ray runtimes, the coordinator actor."""
