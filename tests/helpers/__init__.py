"""What several test modules build: predictions from the truth, corrupt prediction files,
tuning cases, reference COCO figures, a report check, tiny mmdet models. No test module imports
another test module; they import from here."""

from pathlib import Path

#: the repository root
REPO = Path(__file__).resolve().parents[2]
