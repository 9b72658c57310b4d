"""MLflow tracking: one parent run per sweep, one nested child run per trial, the registry."""
