"""Model backends behind one `Generator` interface."""
