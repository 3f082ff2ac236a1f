"""The ablation study: its plan from the config (plan), its statistics and verdict words (stats), the numbers per
configuration and comparison (summary), the report text and figures (text, figures), and the workflow's report job
(report_job)."""
