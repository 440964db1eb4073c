"""Many libvirt hosts at once: every disk of every domain as a frame, fleet-wide plans, run within limits.

``qb.Fleet(uris)`` (``fleet``), the goal rules of ``qb.goals`` applied to every disk it selects
(``plan``), and their run, a few disks at a time per host (``runner``).  Reads go to libvirt's API with one
connection per host (``reads``); a domain is driven through ``qb.connect_libvirt`` only to run its plan.
"""

from qblocknb.fleet.fleet import Fleet
from qblocknb.fleet.plan import DiskPlan, FleetPlan

__all__ = ["DiskPlan", "Fleet", "FleetPlan"]
