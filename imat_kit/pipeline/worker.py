"""One prediction job of ``imat-kit run --gpus``, in its own process (its device chosen by the
``CUDA_VISIBLE_DEVICES`` the scheduler set): ``python -m imat_kit.pipeline.worker TASK``, with
TASK the JSON of the config, the checkpoint(s), :func:`~imat_kit.mmdet_ext.predict.predict`'s
keyword arguments and the file its result goes to. The call is the one the serial run makes
in-process."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from imat_kit.files import atomic_open


def main(argv: list[str]) -> int:
    from imat_kit.mmdet_ext.predict import predict, predict_checkpoints

    task = json.loads(argv[0])
    ckpts, kw = task["checkpoints"], task["kwargs"]
    if len(ckpts) > 1:
        r = predict_checkpoints(task["config"], ckpts, quiet=True, **kw)
    else:
        r = predict(task["config"], ckpts[0], quiet=True, **kw)
    with atomic_open(task["result"], "w") as f:
        json.dump(asdict(r), f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
