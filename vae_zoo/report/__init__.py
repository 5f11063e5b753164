"""The report layer: `results/<suite>/` → `reports/<suite>/` (tables, figures, README.md).

It reads files only (pandas, numpy, matplotlib, seaborn); it never imports torch or training code.
"""

from vae_zoo.report.page import build_report
from vae_zoo.report.tables import ResultsNotFoundError

__all__ = ["build_report", "ResultsNotFoundError"]
