"""Live storage migration over NBD between two QEMUs: the seed's steps (``flow``), failures explained with
both sides' state (``explain``), and TLS credentials (``tls``)."""
