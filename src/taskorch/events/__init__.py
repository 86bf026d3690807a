"""Everything about events, from the commit that stores them to the streams that watch them.

    bus.py       in-process fan-out by topic: bounded buffers, a slow reader is marked lagged
    hub.py       where committed events go: task and chat watchers, listeners (metrics),
                 workers' stop notices, the signal that wakes idle workers
    watch.py     the one watch loop (subscribe, snapshot or replay, live, gaps and lag
                 replayed from the store) under WatchTask, WatchSession and the WebSockets
    notify.py    the payload format of the notices replicas send each other at commit
    postgres.py  LISTEN: other replicas' notices, read from the store into the hub

Events are stored before they are published, so the store always has the truth; the bus,
the hub and the notices only make it arrive sooner.
"""
