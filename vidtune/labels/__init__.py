"""Help with labels: what to label next, a crash-safe record of labelling (:mod:`vidtune.labels.journal`)."""
