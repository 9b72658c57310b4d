"""raypost: parameter-efficient post-training (DePT, IM, PCP) on Ray, DeepSpeed and MLflow."""

__version__ = "0.1.0"
