"""mlops-kit: a self-hosted MLflow deployment kit on Docker Compose."""

__version__ = "0.11.0"

#: The MLflow release the kit's server image pins; the CLI's client matches it.
MLFLOW_VERSION = "3.17.2"
