"""Outputs → Prediction, metrics and tests: metrics with bootstrap intervals, task scoring,
and paired tests between arms."""
