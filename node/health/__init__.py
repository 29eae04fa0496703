"""Model health on a node: feature histograms (binning, merging) and drift scores.

Pure numpy, no I/O: ``histograms`` bins values on a model's baseline edges and merges windows
exactly; ``drift`` scores a live histogram against the baseline (PSI, Jensen-Shannon, MCenter's
overlap) and decides when drift should become a health event.
"""
