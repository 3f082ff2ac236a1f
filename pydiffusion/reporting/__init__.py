"""The grid's report: its statistics and the one table of metric names (grid_stats), the report text and CSV
(report), the figures of one model and of the grid (figures, grid_figures), the markdown pieces (markdown), and
the workflow's aggregate job that writes them all (aggregate); and a run's export with its model card (export)."""
