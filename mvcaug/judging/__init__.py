"""Whether the synthetic images help, measured on held-out data: the filter, quality measures, the
classifier cells and their strategies, and the statistics the verdict rests on (paired and nested gains, bootstrap)."""
