"""What the tutorials and the demo share: the seed's chain (``seedchain``), the notebooks' helpers
(``tutorial``), and the verified demo (``demo``)."""
