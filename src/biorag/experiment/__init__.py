"""One arm over its tasks: arms and studies, planning and sweeps, the prediction cache, and
the runner that logs one MLflow child run per cell."""
