"""MLflow → tables, tests, plots: read a study back, compare its arms, render the report."""
