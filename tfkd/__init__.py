"""tfkd: ensembles, knowledge distillation and self-distillation for Keras 3 / TensorFlow."""

__version__ = "0.1.0"
