"""One live QEMU and its surroundings: ``Machine`` (a facade over ``schema``, ``blockstate``,
``jobregistry``, ``chainreader``, ``jobs`` and ``guestio``), the ``lab`` that starts QEMU ``process``es,
and the offline image ``tools``."""
