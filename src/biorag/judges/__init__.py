"""LLM judges: free-text answers graded by rubric, scale and evidence support, alone or as a jury."""
