"""``imat-kit run`` (issue 31): what a first run, a second run with the same inputs, a run with
a changed TTA and a run with a second model on two (fake) GPUs cost, on the demo's synthetic
data with the tiny attribute config; each later run as a ratio of the first, measured in the
same process. The second run must re-run nothing and take seconds (imports and hashing only);
the changed TTA re-predicts and re-runs what follows, never training.

    python benchmarks/run_pipeline.py [--images 120] [--iters 40] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time

from _common import REPO, machine

OUT = REPO / "outputs" / "bench" / "run_pipeline"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    from imat_kit.cli.demo import _schedule, default_config
    from imat_kit.data.synth import generate_images
    from imat_kit.pipeline.chain import run_pipeline
    from imat_kit.pipeline.spec import ModelSpec, RunSpec

    shutil.rmtree(OUT, ignore_errors=True)
    data = OUT / "data"
    generate_images(data, images=a.images, seed=0, quiet=True)
    model = ModelSpec(config=default_config(), name="tiny",
                      cfg_options=tuple(_schedule(a.iters)))
    spec = RunSpec(data=data, out=OUT / "run", models=(model,), folds=(0, 1))
    other = dataclasses.replace(model, name="tiny_b",
                                cfg_options=(*model.cfg_options,
                                             "optim_wrapper.optimizer.lr=0.0004"))
    runs = [("first run", spec),
            ("same inputs again", spec),
            ("changed TTA (flip)", dataclasses.replace(
                spec, models=(dataclasses.replace(model, tta="flip"),))),
            ("a second model, --gpus 0,1 (fake ids, CPU)", dataclasses.replace(
                spec, models=(dataclasses.replace(model, tta="flip"), other),
                gpus=("0", "1")))]
    rows = []
    for name, s in runs:
        t = time.perf_counter()
        result = run_pipeline(s, quiet=True)
        seconds = time.perf_counter() - t
        ran = [st.name for st in result.steps if st.status == "ran"]
        rows.append({"run": name, "seconds": round(seconds, 1), "steps_ran": ran,
                     "headline": {st.name: st.headline for st in result.steps}})
        print(f"{name}: {seconds:.1f} s ({seconds / rows[0]['seconds']:.3f}× the first); "
              f"ran: {', '.join(ran) or 'nothing'}", flush=True)
    out = {"machine": machine(), "images": a.images, "iters": a.iters, "runs": rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
