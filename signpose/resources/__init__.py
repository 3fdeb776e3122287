"""Data files that ship inside the package.

``REAL_SIGNERS``: three short real recordings (MediaPipe Holistic and OpenPose, MIT licence; see
``real_signers/README.md``): the built-in real-signer evaluation set (``--real_eval_path``), used by
``make run`` so that its models are scored on real people, not only on generated ones.
"""

from __future__ import annotations

from pathlib import Path

REAL_SIGNERS = str(Path(__file__).resolve().parent / "real_signers")
