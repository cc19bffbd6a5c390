"""The only package that imports mlflow: runs (writing and reading), the UI server, and
`keys`, which names every tag, param and metric."""
