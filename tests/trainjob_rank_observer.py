"""``python tests/trainjob_rank_observer.py <module> <args>`` = ``python -m <module> <args>``, unchanged,
plus one observation: each rank writes the SHA-256 of the weights it ended training with to
``$SIGNPOSE_OBSERVE_DIR/rank<RANK>.sha256`` (the training CLI writes model.pt from rank 0 only, so a
test could not otherwise see what rank 1 trained)."""

import os
import runpy
import sys

import signpose.train.entry as entry
from signpose.models import cpu_state_dict


def weights_digest(state_dict) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    real_run = entry.run

    def observed(cfg, *args, **kwargs):
        result = real_run(cfg, *args, **kwargs)
        path = os.path.join(os.environ["SIGNPOSE_OBSERVE_DIR"], f"rank{os.environ.get('RANK', '0')}.sha256")
        with open(path, "w") as fh:
            fh.write(weights_digest(cpu_state_dict(result.model)))
        return result

    entry.run = observed  # the CLI looks entry.run up when it runs
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
