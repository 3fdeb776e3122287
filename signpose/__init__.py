"""signpose: keypoint preprocessing, training and tracking for sign-language models."""

from signpose import process_env as _process_env

# Before any signpose module imports MLflow: no pickled model is ever unpickled (see process_env).
_process_env.apply()
