"""``ion deploy``: from an ION plus an inventory to certificates, broker and agent configs.

inventory + IONs -> ``plan`` (pure: who may do what, where each file goes) -> ``bundle``
(certificates from ``pki``, files written per machine).  See docs/deploy.md.
"""
