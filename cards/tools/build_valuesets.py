#!/usr/bin/env python3
"""Builds cards/valuesets/codes.csv from the project's sourced terminology (../shared/terminology/codes.csv).

`cards/valuesets/codes.csv` is what the service reads, and a site adds its codes there by hand (docs/codes.md),
with a `source` that starts with `local:`. This script is for the project's maintainers, who have
../shared: it rebuilds every other row from the sources below and carries the `local:` rows over unchanged
(after the rows it builds, dropping any it now builds itself), so a rebuild never loses a site's codes.

The output keeps every row's `source` column and adds a `note` column that says why a row was moved or added.
Columns: set,system,code,display,source,note. A code may appear in several sets (one row per set); the same
(set, system, code) never appears twice. Nothing here is invented: every added row is either copied from a row of
../shared/terminology/codes.csv (keeping its source), looked up in ../shared/terminology/vsac_expansions.csv (the
script stops if the code is not there; display and source come from that row), or transcribed from a public file
named in its `source` (display verbatim from that file).

Decisions (see ../shared/terminology/NOTES.md):

Moves
- renal-angle pain, renal lumbar ache and low back pain in pregnancy leave `cond.low_back_pain` for
  `cond.not_back_pain` (published VSAC low-back-pain sets include them; they are not musculoskeletal back pain);
- every product listed for `med.do_not_count_as_analgesic_trial` leaves any analgesic set it is in
  (`med.common_products`, `med.topical_nsaid`): in the source data that is low-dose aspirin 243670, 308416, 318272;
- CPT 97010 ("hot or cold packs") leaves `proc.heat_therapy` for the new set `proc.hot_or_cold_pack`: the code alone
  does not say heat; it counts as heat only when the record's text says heat (a text rule, not a code rule);
- the CDS4CPM patient-reported `heat-therapy` code also joins `proc.heat_therapy`, and `activity-goals`
  joins `proc.self_care_education_activity`.

Chronic pain (`cond.chronic_pain_general`)
- fibromyalgia: SNOMED 203082005, 95417003 and ICD-10-CM M79.7 (VSAC 'Fibromyalgia Diagnosis' / 'Chronic Pain
  Conditions'). No ICD-10-CM child of M79.7 (M79.7x) could be sourced, so none is listed;
- chronic widespread pain: SNOMED 102481003 "Generalized chronic body pains" and 762590006 "Chronic primary
  generalized pain" (VSAC 'Chronic Pain'). Fibrositis concepts (56557000, 30173002, ...) in VSAC 'Conditions
  associated with chronic pain' are not added: fibrositis is not clearly a chronic widespread pain concept.

Osteoarthritis of the spine (`exclude.osteoarthritis`, also kept in the region set)
- rule: spondylosis is osteoarthritis of the spine (ICD-10-CM M47 and ICD-9-CM 721 classify spinal OA as
  spondylosis; VSAC 'Osteoarthritis Disorder' contains the M47 codes; NOTES.md treats M47.81x as spinal OA). So
  cervical spondylosis/OA codes are in both `cond.neck_pain` and `exclude.osteoarthritis`, and lumbar
  spondylosis/OA codes are in both `cond.lumbar_degenerative` and `exclude.osteoarthritis`;
- cervical: SNOMED 1343604001, 387800004, 267970006; ICD-10-CM M47.812, M47.12, M47.22, M47.892 (M47.892 "Other
  spondylosis, cervical region" is in VSAC 'Osteoarthritis Disorder'); ICD-9-CM 721.0;
- lumbar: SNOMED 1343605000 (already in both), 713826008, 239880009, 123798002, 48210000, 202693003; ICD-10-CM
  M47.816, M47.817, M47.896, M47.897, M47.26, M47.27; ICD-9-CM 721.3;
- facet "arthropathy"/"arthritis" concepts (427500003 cervical, 428671008 and 16426641000119101 lumbar) stay in their
  region set only: they are not in any VSAC osteoarthritis expansion, and arthropathy is not necessarily OA;
- occipito-atlanto-axial, cervicothoracic, thoracic and sacral spondylosis (M47.x1/x3/x4/x5/x8) are not added.

Other ICD-10-CM coverage
- `cond.low_back_pain`: M54.40-M54.42 (lumbago with sciatica), S39.012A/S39.012D (strain of lower back, initial and
  subsequent encounter); `cond.neck_pain`: S16.1XXA/S16.1XXD (strain at neck level; not in any VSAC expansion here,
  display from the CMS FY2023 ICD-10-CM code file); sequela (S) encounters are not added;
- `exclude.osteoarthritis`: every M15.x, M16.x, M17.x and M19.9x code of VSAC 'Osteoarthritis Disorder' /
  'Hip Osteoarthritis' / 'Knee Osteoarthritis'; OA of other single joints (M18, M19.0x-M19.2x) is not added;
- `exclude.headache`: every G43 code of VSAC 'Migraine Diagnosis' except G43.A (cyclical vomiting) and G43.D
  (abdominal migraine), which are not headache presentations; G44.22 (chronic tension-type headache). R51 (the
  pre-FY2021 code for headache) could not be sourced and is not listed.

ICD-9-CM (system http://hl7.org/fhir/sid/icd-9-cm), from the CMS ICD-9-CM v32 long-description file, written with
the decimal point (the CMS file has none); no VSAC expansion here carries ICD-9-CM
- `cond.low_back_pain` 724.2; 724.5 "Backache, unspecified" is not added (not specific to the low back);
- `cond.neck_pain` 723.1, 721.0, 722.4; `cond.lumbar_degenerative` 722.52, 721.3, 724.02, 724.03;
- `cond.myalgia_broad_optional` 729.1 (ICD-9-CM also codes fibromyalgia and myofascial pain there, but the code is
  myalgia in general, so it is not put in the chronic-pain or myofascial sets);
- `exclude.osteoarthritis` every 715.xx code, 721.0, 721.3; `exclude.patellofemoral_pain` 717.7;
- `exclude.headache` 784.0, every 346.xx code, 339.10-339.12 (tension type headache);
- `cond.chronic_pain_general` 338.21, 338.22, 338.28, 338.29, 338.4.

Medications (`med.do_not_count_as_analgesic_trial`); only product-level RxNorm rows (a strength and a dose form, or
a pack), never ingredients: an ingredient here would stop every product of it counting
- low-dose aspirin: every single-ingredient aspirin product of at most 162 MG per unit found in
  vsac_expansions.csv, plus aspirin <= 162 MG combined only with a non-analgesic antiplatelet/GI/buffer/statin
  partner (dipyridamole, omeprazole, calcium carbonate, pravastatin pack); 24 HR aspirin 162.5 MG ER capsule
  (Durlaza, a once-daily antiplatelet formulation) is included although 0.5 MG over the cut-off; aspirin 165 MG is
  not; aspirin concentrations (1 MG/MG powder, 1.5 and 2.5 MG/ML solutions) are not (dose per unit unknown);
  no branded low-dose product (Bayer, Ecotrin, St. Joseph 81 MG) is in the expansions, so none is listed;
- combinations of acetaminophen/aspirin/an NSAID with an opioid, a cough/cold ingredient (antitussive, expectorant,
  decongestant, antihistamine) or a sleep aid (diphenhydramine, doxylamine, melatonin), from the VSAC analgesic
  expansions, plus aspirin/opioid products of VSAC 'Aspirin or Clopidogrel'; a pack counts when any of its
  components is such a combination (a few packs also hold a plain analgesic, e.g. Tylenol PM + Tylenol);
- not listed (still analgesic trials or outside the brief): caffeine/salicylamide/pamabrom combinations, pyrilamine
  only with pamabrom/caffeine (menstrual products), butalbital, isometheptene, sumatriptan, metoclopramide or
  domperidone (migraine products), muscle-relaxant combinations (carisoprodol, methocarbamol, orphenadrine,
  meprobamate) unless they also contain an opioid, NSAIDs with a PPI/H2 blocker/misoprostol/amlodipine.

Body sites (new sets; SNOMED concepts as listed by DICOM context groups or a FHIR IG; display as given there)
- `site.neck`: 45048000 Neck, 122494005 Cervical spine, 31764008 Trapezius muscle (the whole muscle; it also spans
  the upper back), 50755001 Scalenous anterior muscle, 22823000 Sternocleidomastoid muscle;
- `site.low_back`: 37822005 Lower back structure, 122496007 Lumbar spine, 1217253001 Lumbo-sacral spine,
  44947003 Erector spinae muscle (the whole muscle; it also spans the thoracic back);
- not sourced, so not listed: levator scapulae, upper trapezius, quadratus lumborum, lumbar multifidus/paraspinal;
  52612000 "Lumbar region" (DICOM CID 4 lists it among abdominal regions) is not used.

Usage: python3 cards/tools/build_valuesets.py [path/to/codes.csv]
"""
import csv
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "terminology" / "codes.csv"
EXPANSIONS = SOURCE.parent / "vsac_expansions.csv"
OUTPUT = ROOT / "cards" / "valuesets" / "codes.csv"

SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9 = "http://hl7.org/fhir/sid/icd-9-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"

NOT_BACK_PAIN = {"102831002", "267067009", "9121000119106"}
ANALGESIC_SETS = {"med.common_products", "med.topical_nsaid"}
NOT_A_TRIAL = "med.do_not_count_as_analgesic_trial"
CDS4CPM_EXTRA = {"heat-therapy": "proc.heat_therapy", "activity-goals": "proc.self_care_education_activity"}

# --- sources outside vsac_expansions.csv (found with the search tool) -------------------------------------------
ICD9_SOURCE = (
    "CMS ICD-9-CM diagnosis codes, long descriptions v32 (CMS32_DESC_LONG_DX.txt) as stored in "
    "dhlee4/AcuteOrganFailureInterventionModel@6d8b1e55 CMS32_DESC_LONG_DX.txt; decimal point added after the "
    "third digit as written for http://hl7.org/fhir/sid/icd-9-cm"
)
ICD10_FILE_SOURCE = (
    "CMS ICD-10-CM FY2023 code descriptions (icd10cm_codes_2023.txt) as stored in "
    "arijitdasgupta543-dev/Medisathi@1f81d32a icd10cm_codes_2023.txt; decimal point added after the third character"
)
DICOM_4031 = (
    "DICOM PS3.16 CID 4031 'Common Anatomic Region' via bvdh/dicom-terminology-in-fhir@3645edf5 "
    "input/fsh/ValueSet-dicom-cid-4031-CommonAnatomicRegion.fsh (display = DICOM code meaning)"
)
DICOM_6116 = (
    "DICOM PS3.16 CID 6116 'Muscular Anatomy' via bvdh/dicom-terminology-in-fhir@3645edf5 "
    "input/fsh/ValueSet-dicom-cid-6116-MuscularAnatomy.fsh (display = DICOM code meaning)"
)
VSAC_ASPIRIN_CLOPIDOGREL = (
    "VSAC 2.16.840.1.113762.1.4.1178.35 'Aspirin or Clopidogrel' via FHIR/packages@1d9b1b35 "
    "packages/us.nlm.vsac/package/ValueSet-2.16.840.1.113762.1.4.1178.35.json (VSAC version 20220716)"
)

# Lines copied verbatim from CMS32_DESC_LONG_DX.txt ("code description", code without its decimal point).
ICD9_LINES = """
33821 Chronic pain due to trauma
33822 Chronic post-thoracotomy pain
33828 Other chronic postoperative pain
33829 Other chronic pain
3384  Chronic pain syndrome
33910 Tension type headache, unspecified
33911 Episodic tension type headache
33912 Chronic tension type headache
34600 Migraine with aura, without mention of intractable migraine without mention of status migrainosus
34601 Migraine with aura, with intractable migraine, so stated, without mention of status migrainosus
34602 Migraine with aura, without mention of intractable migraine with status migrainosus
34603 Migraine with aura, with intractable migraine, so stated, with status migrainosus
34610 Migraine without aura, without mention of intractable migraine without mention of status migrainosus
34611 Migraine without aura, with intractable migraine, so stated, without mention of status migrainosus
34612 Migraine without aura, without mention of intractable migraine with status migrainosus
34613 Migraine without aura, with intractable migraine, so stated, with status migrainosus
34620 Variants of migraine, not elsewhere classified, without mention of intractable migraine without mention of status migrainosus
34621 Variants of migraine, not elsewhere classified, with intractable migraine, so stated, without mention of status migrainosus
34622 Variants of migraine, not elsewhere classified, without mention of intractable migraine with status migrainosus
34623 Variants of migraine, not elsewhere classified, with intractable migraine, so stated, with status migrainosus
34630 Hemiplegic migraine, without mention of intractable migraine without mention of status migrainosus
34631 Hemiplegic migraine, with intractable migraine, so stated, without mention of status migrainosus
34632 Hemiplegic migraine, without mention of intractable migraine with status migrainosus
34633 Hemiplegic migraine, with intractable migraine, so stated, with status migrainosus
34640 Menstrual migraine, without mention of intractable migraine without mention of status migrainosus
34641 Menstrual migraine, with intractable migraine, so stated, without mention of status migrainosus
34642 Menstrual migraine, without mention of intractable migraine with status migrainosus
34643 Menstrual migraine, with intractable migraine, so stated, with status migrainosus
34650 Persistent migraine aura without cerebral infarction, without mention of intractable migraine without mention of status migrainosus
34651 Persistent migraine aura without cerebral infarction, with intractable migraine, so stated, without mention of status migrainosus
34652 Persistent migraine aura without cerebral infarction, without mention of intractable migraine with status migrainosus
34653 Persistent migraine aura without cerebral infarction, with intractable migraine, so stated, with status migrainosus
34660 Persistent migraine aura with cerebral infarction, without mention of intractable migraine without mention of status migrainosus
34661 Persistent migraine aura with cerebral infarction, with intractable migraine, so stated, without mention of status migrainosus
34662 Persistent migraine aura with cerebral infarction, without mention of intractable migraine with status migrainosus
34663 Persistent migraine aura with cerebral infarction, with intractable migraine, so stated, with status migrainosus
34670 Chronic migraine without aura, without mention of intractable migraine without mention of status migrainosus
34671 Chronic migraine without aura, with intractable migraine, so stated, without mention of status migrainosus
34672 Chronic migraine without aura, without mention of intractable migraine with status migrainosus
34673 Chronic migraine without aura, with intractable migraine, so stated, with status migrainosus
34680 Other forms of migraine, without mention of intractable migraine without mention of status migrainosus
34681 Other forms of migraine, with intractable migraine, so stated, without mention of status migrainosus
34682 Other forms of migraine, without mention of intractable migraine with status migrainosus
34683 Other forms of migraine, with intractable migraine, so stated, with status migrainosus
34690 Migraine, unspecified, without mention of intractable migraine without mention of status migrainosus
34691 Migraine, unspecified, with intractable migraine, so stated, without mention of status migrainosus
34692 Migraine, unspecified, without mention of intractable migraine with status migrainosus
34693 Migraine, unspecified, with intractable migraine, so stated, with status migrainosus
71500 Osteoarthrosis, generalized, site unspecified
71504 Osteoarthrosis, generalized, hand
71509 Osteoarthrosis, generalized, multiple sites
71510 Osteoarthrosis, localized, primary, site unspecified
71511 Osteoarthrosis, localized, primary, shoulder region
71512 Osteoarthrosis, localized, primary, upper arm
71513 Osteoarthrosis, localized, primary, forearm
71514 Osteoarthrosis, localized, primary, hand
71515 Osteoarthrosis, localized, primary, pelvic region and thigh
71516 Osteoarthrosis, localized, primary, lower leg
71517 Osteoarthrosis, localized, primary, ankle and foot
71518 Osteoarthrosis, localized, primary, other specified sites
71520 Osteoarthrosis, localized, secondary, site unspecified
71521 Osteoarthrosis, localized, secondary, shoulder region
71522 Osteoarthrosis, localized, secondary, upper arm
71523 Osteoarthrosis, localized, secondary, forearm
71524 Osteoarthrosis, localized, secondary, hand
71525 Osteoarthrosis, localized, secondary, pelvic region and thigh
71526 Osteoarthrosis, localized, secondary, lower leg
71527 Osteoarthrosis, localized, secondary, ankle and foot
71528 Osteoarthrosis, localized, secondary, other specified sites
71530 Osteoarthrosis, localized, not specified whether primary or secondary, site unspecified
71531 Osteoarthrosis, localized, not specified whether primary or secondary, shoulder region
71532 Osteoarthrosis, localized, not specified whether primary or secondary, upper arm
71533 Osteoarthrosis, localized, not specified whether primary or secondary, forearm
71534 Osteoarthrosis, localized, not specified whether primary or secondary, hand
71535 Osteoarthrosis, localized, not specified whether primary or secondary, pelvic region and thigh
71536 Osteoarthrosis, localized, not specified whether primary or secondary, lower leg
71537 Osteoarthrosis, localized, not specified whether primary or secondary, ankle and foot
71538 Osteoarthrosis, localized, not specified whether primary or secondary, other specified sites
71580 Osteoarthrosis involving, or with mention of more than one site, but not specified as generalized, site unspecified
71589 Osteoarthrosis involving, or with mention of more than one site, but not specified as generalized, multiple sites
71590 Osteoarthrosis, unspecified whether generalized or localized, site unspecified
71591 Osteoarthrosis, unspecified whether generalized or localized, shoulder region
71592 Osteoarthrosis, unspecified whether generalized or localized, upper arm
71593 Osteoarthrosis, unspecified whether generalized or localized, forearm
71594 Osteoarthrosis, unspecified whether generalized or localized, hand
71595 Osteoarthrosis, unspecified whether generalized or localized, pelvic region and thigh
71596 Osteoarthrosis, unspecified whether generalized or localized, lower leg
71597 Osteoarthrosis, unspecified whether generalized or localized, ankle and foot
71598 Osteoarthrosis, unspecified whether generalized or localized, other specified sites
7177  Chondromalacia of patella
7210  Cervical spondylosis without myelopathy
7213  Lumbosacral spondylosis without myelopathy
7224  Degeneration of cervical intervertebral disc
72252 Degeneration of lumbar or lumbosacral intervertebral disc
7231  Cervicalgia
72402 Spinal stenosis, lumbar region, without neurogenic claudication
72403 Spinal stenosis, lumbar region, with neurogenic claudication
7242  Lumbago
7291  Myalgia and myositis, unspecified
7840  Headache
""".strip()

# Lines copied verbatim from icd10cm_codes_2023.txt.
ICD10_FILE_LINES = """
S161XXA Strain of muscle, fascia and tendon at neck level, initial encounter
S161XXD Strain of muscle, fascia and tendon at neck level, subsequent encounter
""".strip()


def icd9_table():
    table = {}
    for line in ICD9_LINES.splitlines():
        raw, display = line[:5].strip(), line[6:].strip()
        table[f"{raw[:3]}.{raw[3:]}"] = display
    return table


def icd10_file_table():
    table = {}
    for line in ICD10_FILE_LINES.splitlines():
        raw, display = line.split(" ", 1)
        table[f"{raw[:3]}.{raw[3:]}"] = display
    return table


ICD9_TABLE = icd9_table()
ICD10_FILE_TABLE = icd10_file_table()

# --- shared data ---------------------------------------------------------------------------------------------------
rows = []
with open(SOURCE, newline="", encoding="utf-8") as f:
    for row in csv.DictReader(f):
        row["note"] = ""
        if row["set"] == "cond.low_back_pain" and row["code"] in NOT_BACK_PAIN:
            row["set"], row["note"] = "cond.not_back_pain", "moved from cond.low_back_pain: not musculoskeletal back pain"
        elif row["set"] == "order.related_not_dry_needling" and row["system"] == CPT and row["code"] == "20999":
            row["set"] = "order.unlisted_procedure"
            row["note"] = ("moved from order.related_not_dry_needling: 'unlisted procedure' was how dry needling was billed "
                           "before 2020 (terminology/NOTES.md), so the code decides nothing and the order's text does")
        elif row["set"] == "proc.heat_therapy" and row["system"] == CPT and row["code"] == "97010":
            row["set"] = "proc.hot_or_cold_pack"
            row["note"] = ("moved from proc.heat_therapy: 97010 covers hot OR cold packs, so the code alone is not heat; "
                           "count it as heat only when its text says heat")
        rows.append(row)
        if row["set"] == "proc.patient_reported_cds4cpm" and row["code"] in CDS4CPM_EXTRA:
            extra = dict(row, set=CDS4CPM_EXTRA[row["code"]], note="copied from proc.patient_reported_cds4cpm")
            rows.append(extra)

expansions = {}
with open(EXPANSIONS, newline="", encoding="utf-8") as f:
    for row in csv.DictReader(f):
        expansions.setdefault((row["system"], row["code"]), []).append(row)


def key(row):
    return (row["set"], row["system"], row["code"])


present = {key(r) for r in rows}


def add(set_name, system, code, display, source, note):
    """Adds a row unless the set already has the code."""
    row = {"set": set_name, "system": system, "code": code, "display": display, "source": source, "note": note}
    if key(row) in present:
        return
    present.add(key(row))
    rows.append(row)


def vsac_row(system, code, prefer=()):
    """Display and source of a code in vsac_expansions.csv (preferring the VSAC sets named in `prefer`)."""
    found = expansions.get((system, code))
    if not found:
        raise SystemExit(f"{system}|{code} is not in {EXPANSIONS.name}: not adding an unsourced code")
    chosen = next((r for p in prefer for r in found if p in r["set"]), found[0])
    oid, title = chosen["set"].removeprefix("vsac:").split(" ", 1)
    others = len({r["set"] for r in found}) - 1
    source = f"VSAC {oid} '{title}' via {chosen['source']} (row of shared/terminology/vsac_expansions.csv)"
    if others:
        source += f" (+{others} other VSAC sets)"
    return chosen["display"], source


def vsac(set_name, system, code, note, prefer=()):
    """Adds a code found in vsac_expansions.csv, with that row's display and its VSAC set as source."""
    display, source = vsac_row(system, code, prefer)
    add(set_name, system, code, display, source, note)


def copy(set_name, from_set, system, code, note):
    """Adds a code that ../shared/terminology/codes.csv already sources for another set, keeping its source."""
    found = [r for r in rows if r["set"] == from_set and r["system"] == system and r["code"] == code]
    if not found:
        raise SystemExit(f"{system}|{code} is not in {from_set}")
    add(set_name, system, code, found[0]["display"], found[0]["source"], f"copied from {from_set}: {note}")


def icd9(set_name, code, note):
    add(set_name, ICD9, code, ICD9_TABLE[code], ICD9_SOURCE, note)


# --- 1. chronic pain: fibromyalgia and chronic widespread pain ---------------------------------------------------
FIBRO = "fibromyalgia is a chronic widespread pain condition"
vsac("cond.chronic_pain_general", SCT, "203082005", FIBRO, ["1222.1475"])
vsac("cond.chronic_pain_general", SCT, "95417003", FIBRO, ["1222.1475"])
vsac("cond.chronic_pain_general", ICD10, "M79.7", FIBRO, ["1222.1475"])
for code in ("102481003", "762590006"):
    vsac("cond.chronic_pain_general", SCT, code, "chronic widespread (generalized) pain", ["1222.1458"])

# --- 2. osteoarthritis / spondylosis of the spine ----------------------------------------------------------------
OA = ["1219.191", "1222.648"]
CERVICAL_OA = "cervical spondylosis is osteoarthritis of the cervical spine: also an osteoarthritis exclusion"
LUMBAR_OA = "lumbar spondylosis is osteoarthritis of the lumbar spine: also an osteoarthritis exclusion"
vsac("exclude.osteoarthritis", SCT, "1343604001", CERVICAL_OA, OA)
copy("exclude.osteoarthritis", "cond.neck_pain", SCT, "387800004", CERVICAL_OA)
copy("exclude.osteoarthritis", "cond.neck_pain", SCT, "267970006", CERVICAL_OA)
copy("exclude.osteoarthritis", "cond.neck_pain", ICD10, "M47.812", CERVICAL_OA)
vsac("exclude.osteoarthritis", ICD10, "M47.892", CERVICAL_OA + " (M47.892 is cervical 'other spondylosis', in VSAC OA set)", OA)
for code in ("M47.12", "M47.22"):
    vsac("exclude.osteoarthritis", ICD10, code, CERVICAL_OA, OA)
    vsac("cond.neck_pain", ICD10, code, "cervical spondylosis: neck condition (also in exclude.osteoarthritis)", OA)
vsac("exclude.osteoarthritis", SCT, "713826008", LUMBAR_OA, OA)
for code in ("239880009", "123798002", "48210000", "202693003"):
    copy("exclude.osteoarthritis", "cond.lumbar_degenerative", SCT, code, LUMBAR_OA)
for code in ("M47.816", "M47.817", "M47.896", "M47.897", "M47.26", "M47.27"):
    vsac("exclude.osteoarthritis", ICD10, code, LUMBAR_OA, OA)

# --- 3. low back pain, neck pain: ICD-10-CM coverage --------------------------------------------------------------
for code in ("M54.40", "M54.41", "M54.42"):
    vsac("cond.low_back_pain", ICD10, code, "lumbago with sciatica is low back pain")
for code in ("S39.012A", "S39.012D"):
    vsac("cond.low_back_pain", ICD10, code, "strain of muscle of lower back (initial/subsequent encounter)")
for code in ("S16.1XXA", "S16.1XXD"):
    add("cond.neck_pain", ICD10, code, ICD10_FILE_TABLE[code], ICD10_FILE_SOURCE,
        "strain of neck muscle (initial/subsequent encounter); not in any VSAC expansion here")

# --- 4. osteoarthritis and headache: ICD-10-CM coverage -----------------------------------------------------------
for (system, code), found in sorted(expansions.items()):
    sets = " ".join(r["set"] for r in found)
    if system == ICD10 and re.match(r"M1[5-7](\.|$)|M19\.9", code) and re.search(r"1219\.191|1222\.648|1078\.8(03|12)", sets):
        vsac("exclude.osteoarthritis", ICD10, code, "osteoarthritis code missing from the set (VSAC OA expansion)",
             OA + ["1078.803", "1078.812"])
    if system == ICD10 and re.match(r"G43(\.|$)", code) and not re.match(r"G43\.[AD]", code):
        vsac("exclude.headache", ICD10, code, "migraine (VSAC 'Migraine Diagnosis'); G43.A/G43.D are not headache",
             ["1222.1552"])
# Back pain outside the low back (thoracic, other dorsalgia): "any neck or back pain" is never first line for
# dry needling (S1-39), so these are back pain indications of their own region (not low back pain).
for code in ["M54.6", "M54.89"]:
    vsac("cond.back_pain_other", ICD10, code, "back pain outside the low back (thoracic spine, other dorsalgia)",
         ["1146.811"])
vsac("exclude.headache", ICD10, "G44.22", "chronic tension-type headache (category code)", ["1222.1555"])

# --- 5. ICD-9-CM ---------------------------------------------------------------------------------------------------
icd9("cond.low_back_pain", "724.2", "ICD-9-CM lumbago (low back pain) for records coded before Oct 2015")
icd9("cond.neck_pain", "723.1", "ICD-9-CM cervicalgia for records coded before Oct 2015")
icd9("cond.neck_pain", "721.0", "ICD-9-CM cervical spondylosis (also in exclude.osteoarthritis)")
icd9("cond.neck_pain", "722.4", "ICD-9-CM cervical disc degeneration (as M50.3x in this set)")
for code in ("722.52", "721.3", "724.02", "724.03"):
    icd9("cond.lumbar_degenerative", code, "ICD-9-CM degenerative lumbar disease (disc, spondylosis, stenosis)")
icd9("cond.myalgia_broad_optional", "729.1", "ICD-9-CM myalgia (it also covered fibromyalgia and myofascial pain)")
for code in [c for c in ICD9_TABLE if c.startswith("715.")] + ["721.0", "721.3"]:
    icd9("exclude.osteoarthritis", code, "ICD-9-CM osteoarthrosis / spinal osteoarthritis (spondylosis)")
icd9("exclude.patellofemoral_pain", "717.7", "ICD-9-CM chondromalacia patellae (as M22.4x)")
for code in ["784.0"] + [c for c in ICD9_TABLE if c.startswith(("346.", "339.1"))]:
    icd9("exclude.headache", code, "ICD-9-CM headache, migraine or tension type headache")
for code in ("338.21", "338.22", "338.28", "338.29", "338.4"):
    icd9("cond.chronic_pain_general", code, "ICD-9-CM chronic pain (as G89.2x/G89.4)")

# --- 6. medications that do not count as an analgesic trial ------------------------------------------------------
ANALGESIC = (r"acetaminophen|aspirin|ibuprofen|naproxen|diclofenac|ketoprofen|ketorolac|meloxicam|celecoxib|etodolac|"
             r"nabumetone|indomethacin|piroxicam|sulindac|oxaprozin|diflunisal|flurbiprofen|mefenamic|fenoprofen|"
             r"tolmetin|meclofenamate|salsalate")
OPIOID = (r"codeine|hydrocodone|oxycodone|tramadol|propoxyphene|pentazocine|benzhydrocodone|dihydrocodeine|"
          r"tapentadol|morphine|hydromorphone|meperidine")
COLD = (r"dextromethorphan|guaifenesin|phenylephrine|pseudoephedrine|phenylpropanolamine|ephedrine|chlorpheniramine|"
        r"brompheniramine|triprolidine|phenyltoloxamine|clemastine|chlophedianol|promethazine|carbinoxamine|"
        r"cetirizine|loratadine|fexofenadine")
SLEEP = r"diphenhydramine|doxylamine|melatonin"
DOSE_FORM = (r"(Tablet|Capsule|Solution|Suspension|Syrup|Elixir|Powder|Granules|Lozenge|Film|Strip|Suppository|"
             r"Liquid|Gel|Cream|Patch|Spray|Wafer|Gum|Packet|Drops)( \[[^\]]+\])?$")
ASPIRIN_PARTNER = r"^(dipyridamole|omeprazole|calcium carbonate)$"
ANALGESIC_VSAC = ["1032.26", "1021.73", "1260.173"]


def is_product(display):
    return display.startswith("{") or bool(re.search(r"\d MG", display) and re.search(DOSE_FORM, display))


def low_dose_aspirin(display):
    """Aspirin at most 162 MG per unit, alone or with a non-analgesic antiplatelet/GI/buffer/statin partner."""
    if display.startswith("{"):  # pack: every aspirin component low-dose, other components pravastatin
        parts = re.findall(r"\(([^()]*)\)", display)
        return bool(parts) and all(low_dose_aspirin(p) or p.startswith("pravastatin") for p in parts) \
            and any(low_dose_aspirin(p) for p in parts)
    body = re.sub(r"^\d+ HR ", "", display)
    parts = [p.strip() for p in body.split(" / ")]
    m = re.match(r"aspirin (\d+(?:\.\d+)?) MG( |$)", parts[0])
    if not m:
        return False
    others = [re.sub(r" \d.*$", "", p) for p in parts[1:]]
    return float(m.group(1)) <= 162 and all(re.match(ASPIRIN_PARTNER, o) for o in others)


def not_a_trial(system, code, note, display=None, source=None):
    """Puts a product in the do-not-count set, moving it out of any analgesic set it is in. Without a display and
    source, both come from vsac_expansions.csv."""
    if source is None:
        display, source = vsac_row(system, code, ANALGESIC_VSAC)
    for row in rows:
        if row["system"] == system and row["code"] == code and row["set"] in ANALGESIC_SETS:
            present.discard(key(row))
            moved_from = row["set"]
            row["set"], row["note"] = NOT_A_TRIAL, f"moved from {moved_from}: {note}"
            if key(row) in present:  # already listed there: drop the duplicate
                rows.remove(row)
            else:
                present.add(key(row))
            return
    add(NOT_A_TRIAL, system, code, display, source, note)


for (system, code), found in sorted(expansions.items()):
    if system != RXNORM:
        continue
    display = found[0]["display"]
    if not is_product(display):
        continue
    if low_dose_aspirin(display):
        not_a_trial(system, code, "low-dose aspirin (<= 162 MG per unit) is antiplatelet, not an analgesic trial")
    elif "/" in display and re.search(ANALGESIC, display, re.I):
        kind = ("opioid" if re.search(OPIOID, display, re.I) else "cough/cold" if re.search(COLD, display, re.I)
                else "sleep-aid" if re.search(SLEEP, display, re.I) else None)
        if kind:
            not_a_trial(system, code, f"{kind} combination containing an analgesic: not an analgesic trial")
not_a_trial(RXNORM, "1665356", "24 HR aspirin 162.5 MG ER (once-daily antiplatelet formulation): treated as low-dose "
            "aspirin although 0.5 MG over the 162 MG cut-off")
# aspirin/opioid products listed by VSAC 'Aspirin or Clopidogrel' but not in the expansions file
for code, display in (
    ("637540", "aspirin 325 MG / oxycodone hydrochloride 4.5 MG / oxycodone terephthalate 0.38 MG Oral Tablet"),
    ("848768", "aspirin 325 MG / oxycodone hydrochloride 4.84 MG Oral Tablet"),
    ("994237", "aspirin 325 MG / butalbital 50 MG / caffeine 40 MG / codeine phosphate 30 MG Oral Capsule"),
):
    not_a_trial(RXNORM, code, "opioid combination containing an analgesic: not an analgesic trial", display,
                VSAC_ASPIRIN_CLOPIDOGREL)

# --- 7. body sites -------------------------------------------------------------------------------------------------
SITES = [
    ("site.neck", "45048000", "Neck", DICOM_4031, "neck region"),
    ("site.neck", "122494005", "Cervical spine", DICOM_4031, "cervical spine"),
    ("site.neck", "31764008", "Trapezius muscle", DICOM_6116,
     "trapezius (upper trapezius is the usual neck target; the concept is the whole muscle, which also spans the upper back)"),
    ("site.neck", "50755001", "Scalenous anterior muscle", DICOM_6116, "scalene muscle (neck)"),
    ("site.neck", "22823000", "Sternocleidomastoid muscle", DICOM_6116, "neck muscle"),
    ("site.low_back", "37822005", "Lower back structure",
     "FHIR IG source acc-fhir-publisher/icp input/fsh/vocabulary/bodysite.fsh (ValueSet acc-icp-body-site-measure, "
     "$SCT#37822005 \"Lower back structure\")", "lower back region"),
    ("site.low_back", "122496007", "Lumbar spine", DICOM_4031, "lumbar spine"),
    ("site.low_back", "1217253001", "Lumbo-sacral spine", DICOM_4031, "lumbosacral spine"),
    ("site.low_back", "44947003", "Erector spinae muscle", DICOM_6116,
     "paraspinal muscle (the concept is the whole erector spinae, which also spans the thoracic back)"),
]
for set_name, code, display, source, note in SITES:
    add(set_name, SCT, code, display, source, f"body site: {note}")

# --- 8. the site's own rows (source `local: ...`), carried over from the current file -----------------------------
built = {(r["set"], r["system"], r["code"]) for r in rows}
if OUTPUT.exists():
    with open(OUTPUT, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["source"].startswith("local:") and (r["set"], r["system"], r["code"]) not in built:
                rows.append({k: r.get(k, "") for k in ["set", "system", "code", "display", "source", "note"]})

missing = [r for r in rows if not r["source"] or not r["display"]]
if missing:
    raise SystemExit(f"rows without source or display: {missing[:3]}")

with open(OUTPUT, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=["set", "system", "code", "display", "source", "note"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
print(f"wrote {len(rows)} codes to {OUTPUT.relative_to(ROOT)}")
