"""tfship: TensorFlow models from export to smoke-tested replicas on Kubernetes."""

__version__ = "0.1.0"
