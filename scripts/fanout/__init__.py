"""The fan-out benchmark's pieces; ``scripts/bench_fanout.py`` is the entry point.

- ``system``: the loopback host, the two cores, /proc figures, the scripts it starts
- ``ceiling``: the minimal aiohttp server (run as its own file)
- ``publisher``: the publisher process, which posts the hooks
- ``subscribers``, ``raw_subscribers``, ``aiohttp_subscribers``: the subscribers
- ``figures``: latency and order figures of one phase
- ``group``: the subscribers of one server and its phases, in the client process
- ``worker``: the client process, and the orchestrator's handle on it
- ``report``: the lines printed, the summary and the targets
"""
