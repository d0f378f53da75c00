#!/usr/bin/env python3
"""Builds cards/valuesets/codes.csv from the project's sourced terminology (../shared/terminology/codes.csv).

The output keeps every row's `source` column and adds a `note` column that says why a row was moved or added.
Decisions (see ../shared/terminology/NOTES.md):
- renal-angle pain, renal lumbar ache and low back pain in pregnancy leave `cond.low_back_pain` for
  `cond.not_back_pain` (published VSAC low-back-pain sets include them; they are not musculoskeletal back pain);
- low-dose aspirin 81 MG products leave `med.common_products` for `med.do_not_count_as_analgesic_trial`
  (antiplatelet, not an analgesic trial);
- the CDS4CPM patient-reported `heat-therapy` code also joins `proc.heat_therapy`, and `activity-goals`
  joins `proc.self_care_education_activity`.

Usage: python3 cards/tools/build_valuesets.py [path/to/codes.csv]
"""
import csv
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "terminology" / "codes.csv"
OUTPUT = ROOT / "cards" / "valuesets" / "codes.csv"

NOT_BACK_PAIN = {"102831002", "267067009", "9121000119106"}
LOW_DOSE_ASPIRIN = {"243670", "308416", "318272"}
CDS4CPM_EXTRA = {"heat-therapy": "proc.heat_therapy", "activity-goals": "proc.self_care_education_activity"}

rows = []
with open(SOURCE, newline="", encoding="utf-8") as f:
    for row in csv.DictReader(f):
        row["note"] = ""
        if row["set"] == "cond.low_back_pain" and row["code"] in NOT_BACK_PAIN:
            row["set"], row["note"] = "cond.not_back_pain", "moved from cond.low_back_pain: not musculoskeletal back pain"
        elif row["set"] == "med.common_products" and row["code"] in LOW_DOSE_ASPIRIN:
            row["set"], row["note"] = "med.do_not_count_as_analgesic_trial", "moved from med.common_products: low-dose aspirin is antiplatelet"
        rows.append(row)
        if row["set"] == "proc.patient_reported_cds4cpm" and row["code"] in CDS4CPM_EXTRA:
            extra = dict(row, set=CDS4CPM_EXTRA[row["code"]], note="copied from proc.patient_reported_cds4cpm")
            rows.append(extra)

with open(OUTPUT, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=["set", "system", "code", "display", "source", "note"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
print(f"wrote {len(rows)} codes to {OUTPUT.relative_to(ROOT)}")
