"""The model: plain data and rules, no QMP, no processes, no threads.

The chain (``chain``), QEMU's job vocabulary as typed tables (``vocabulary``), the pre-flight checks and
predictions (``checks``, ``predict``), a job's state machine (``jobstate``), and the small things spelled
once: NBD names (``nbd``), sizes, colours (``palette``), the observer type (``listeners``).
"""
