"""Transport: QMP to one QEMU, over its socket (``session`` on the shared ``loop``) or through libvirt
(``libvirt``), with a ``history`` of every command and qmp-shell line syntax (``shell``). Only ``live``
uses it."""
