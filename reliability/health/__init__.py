"""Health: checks written once, rounds that a process's probes share, the history the monitor
keeps, and the pages that show it.

``checks`` (one per component) -> ``runner`` (single-flight rounds, ``report``) -> ``views`` and
``middleware`` (the probe URLs), ``monitor`` -> ``history`` (transitions, samples) -> ``uptime``
-> ``admin``. ``heartbeats`` is what task workers call to say they are alive.
"""
