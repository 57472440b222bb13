"""Remote model updates: download, verify, trial, swap, probation, rollback; fleet state."""
