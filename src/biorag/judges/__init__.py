"""LLM judges: rubric, scale and support verdicts, juries, pairwise arenas and their checks against human labels."""
