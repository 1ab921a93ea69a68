#!/usr/bin/env python3
"""Presidio's pattern recognizers on Ward's benchmark texts: MB/s.

Owns: the Presidio side of bench/scan-vs-presidio.sh. Reads the texts that
`cargo bench --bench scan` writes when WARD_SCAN_TEXTS_DIR is set
(phi_free.txt, mixed.txt) and runs, on each, every Presidio recognizer that
covers something Ward detects: US SSN, MBI, NPI, medical license (DEA),
health insurance member id, date, credit card, phone, e-mail.

Refuses: NLP. The recognizers are instantiated directly and called with
nlp_artifacts=None, so no spaCy model is downloaded or loaded (Presidio's
AnalyzerEngine would load one); this measures Presidio at its fastest,
regular expressions and validators only, as Ward is measured.

Prints one JSON object per text set: bytes, runs, seconds, mb_per_s,
results (matches found in one run) and seconds per run by recognizer.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

# EmailRecognizer validates domains with tldextract, which by default
# fetches the public suffix list from the network on first use. Use the
# snapshot bundled with the package instead: no network, same answers.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")


def recognizers():
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        DateRecognizer,
        EmailRecognizer,
        MedicalLicenseRecognizer,
        PhoneRecognizer,
        UsHealthInsuranceMemberIdRecognizer,
        UsMbiRecognizer,
        UsNpiRecognizer,
        UsSsnRecognizer,
    )

    classes = [
        UsSsnRecognizer,
        UsMbiRecognizer,
        UsNpiRecognizer,
        MedicalLicenseRecognizer,
        UsHealthInsuranceMemberIdRecognizer,
        DateRecognizer,
        CreditCardRecognizer,
        PhoneRecognizer,
        EmailRecognizer,
    ]
    return [cls() for cls in classes]


def scan(recs, text, seconds_by_recognizer=None):
    found = 0
    for r in recs:
        start = time.perf_counter()
        found += len(r.analyze(text, r.supported_entities))
        if seconds_by_recognizer is not None:
            name = type(r).__name__
            seconds_by_recognizer[name] = seconds_by_recognizer.get(name, 0.0) + time.perf_counter() - start
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("texts_dir", type=Path)
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring time per text set (at least one run)")
    args = ap.parse_args()
    recs = recognizers()
    for name in ("phi_free", "mixed"):
        text = (args.texts_dir / f"{name}.txt").read_text(encoding="utf-8")
        size = len(text.encode("utf-8"))
        # Warm-up on a slice: compiles every regex once.
        scan(recs, text[:10_000])
        runs = 0
        results = 0
        by_recognizer = {}
        start = time.perf_counter()
        while True:
            results = scan(recs, text, by_recognizer)
            runs += 1
            elapsed = time.perf_counter() - start
            if elapsed >= args.seconds:
                break
        print(
            json.dumps(
                {
                    "set": name,
                    "bytes": size,
                    "runs": runs,
                    "seconds": round(elapsed, 3),
                    "mb_per_s": size * runs / elapsed / 1e6,
                    "results": results,
                    "seconds_per_run_by_recognizer": {k: round(v / runs, 3) for k, v in by_recognizer.items()},
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
