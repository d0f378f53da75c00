#!/usr/bin/env python3
"""Classifies the ICD-10-CM codes the dry-needling cards care about, from the complete CMS/NCHS release.

Writes `cards/valuesets/icd10cm.csv` (columns set,system,code,display,source) and refreshes the generated part of
`cards/valuesets/ICD10CM-COVERAGE.md` (between its BEGIN/END GENERATED markers). Reads, never writes,
`cards/valuesets/codes.csv`, whose ICD-10-CM rows are the hand-curated exceptions the rules must agree with.

Install and run (Python 3.9+; no other dependency):
    pip install simple-icd-10-cm==1.5.0
    python3 cards/tools/classify_icd10cm.py            # writes the CSV, refreshes the doc, prints the counts
    python3 cards/tools/classify_icd10cm.py --check    # writes nothing; exit 1 when either file is out of date
Exit status 2 when a codes.csv row disagrees with the classification and is not in INTENDED_DISAGREEMENTS, when
a code in the ranges matches no rule, or when a parent whose children disagree has no PARENT_KINDS entry.

Release: simple-icd-10-cm 1.5.0 bundles the ICD-10-CM tabular list `icd10c-tabular-April-1-2026.xml` and the code
list `code-list-April-2026.txt`: the FY2026 code set as updated on April 1, 2026 (published by CDC/NCHS and CMS).
Another package version prints a warning; its release is read from the package and named in the `source` column.

Scope: every category, subcategory and code with a 7th character that the package lists in M00-M99 (chapter 13),
G43-G44, G89, S13, S16, S23, S29, S33, S39 and Z80-Z87. Blocks ("M50-M54") are not codes and are left out.
Displays are the package's descriptions: the tabular text, and for codes built from a 7th-character rule the
parent's text, a comma and the 7th character's meaning (the CMS long-description form).

Every code gets exactly one KIND row and zero or more SITE rows (set `site.<region>`).

KIND of a leaf (a code with no children): the first matching entry of EXCEPTIONS (one code), else of RULES
(code prefixes, first match wins). Region-split families ("by region") read the spinal region from the
description: cervical = occipito-atlanto-axial, cervical, cervicothoracic; thoracic; thoracolumbar; lumbar =
lumbar, lumbosacral, sacral and sacrococcygeal; unknown = site unspecified, multiple sites, or several regions.
  Exceptions (one code and its children):
  X-M54.51   M54.51 -> cond.lumbar_degenerative: vertebrogenic LBP is Modic endplate degeneration, chronic by nature (team decision; codes.csv lists it in cond.low_back_pain)
  X-M96.1    M96.1 -> cond.lumbar_degenerative: failed back surgery syndrome; laminectomy for pain is overwhelmingly lumbar, so its site is low back
  X-M79.18   M79.18 -> cond.myofascial_trigger_point: codes.csv; the ICD-10-CM index sends "myofascial pain syndrome" to M79.18
  X-M54.81   M54.81 -> exclude.headache: occipital neuralgia is a headache disorder (ICHD-3 13.4), not back pain
  X-M43.6    M43.6 -> cond.neck_pain: acquired torticollis (congenital/spasmodic/psychogenic excluded) is acute wry neck, a neck pain presentation
  X-M62.85   M62.85 -> cond.low_back_pain: lumbar multifidus dysfunction is coded for chronic mechanical low back pain, not for spinal degeneration
  X-M54.9    M54.9 -> cond.low_back_pain: codes.csv (VSAC backache sets); "Backache NOS" is read as low back pain
  X-M53.0    M53.0 -> cond.neck_pain: cervicocranial syndrome is a neck disorder
  X-M53.1    M53.1 -> cond.neck_pain: codes.csv; cervicobrachial syndrome is neck pain radiating to the arm
  X-M53.3    M53.3 -> cond.back_pain_other: coccygodynia is back pain, but not lumbar low back pain
  X-G43.A    G43.A-> cond.not_addressed: cyclical vomiting is not a headache (codes.csv leaves it out of the headache set)
  X-G43.D    G43.D-> cond.not_addressed: abdominal migraine is not a headache (codes.csv leaves it out of the headache set)
  X-M25.0    M25.0-> cond.not_addressed: hemarthrosis is bleeding into a joint, not a pain/derangement problem
  X-M25.1    M25.1-> cond.not_addressed: fistula of joint is not a pain/derangement problem
  X-S29.011  S29.011-> cond.other_musculoskeletal: strain of the front wall of the thorax is chest-wall, not back, pain
  X-S29.012  S29.012-> cond.back_pain_other: strain of the back wall of the thorax is thoracic back pain
  X-S29.019  S29.019-> cond.back_pain_other: thoracic strain of unspecified wall: back pain of unknown site
  X-S39.011  S39.011-> cond.other_musculoskeletal: strain of abdominal wall muscle is not back pain
  X-S39.012  S39.012-> cond.low_back_pain: strain of lower back muscle is low back pain (codes.csv)
  X-S39.013  S39.013-> cond.other_musculoskeletal: strain of pelvic muscle is not lower back pain
  Block rules (prefixes; first match wins):
  R-HEADACHE       G43, G44 -> exclude.headache: the guideline recommends against dry needling for headache
  R-G89-CHRONIC    G89.2, G89.4 -> cond.chronic_pain_general: chronic pain and chronic pain syndrome
  R-G89-OTHER      G89 -> cond.not_addressed: central pain, acute pain (trauma, postprocedural) and neoplasm pain are not indications
  R-M00-M14        M00-M14, M1A -> cond.not_addressed: infectious, inflammatory and crystal arthropathies
  R-OA             M15-M19 -> exclude.osteoarthritis: osteoarthritis of any joint
  R-M20-M21        M20, M21 -> cond.not_addressed: acquired limb deformities are structural, not pain conditions
  R-PFP            M22.2, M22.4 -> exclude.patellofemoral_pain: patellofemoral disorders and chondromalacia patellae
  R-M22-OTHER      M22 -> cond.other_musculoskeletal: patellar instability and other patellar derangements are not patellofemoral pain
  R-M23-M25        M23, M24, M25 -> cond.other_musculoskeletal: knee derangement, joint derangement, joint pain and stiffness
  R-TMJ            M26.6 -> cond.other_musculoskeletal: temporomandibular joint disorders are joint pain/derangement of the jaw
  R-M26-M27        M26, M27 -> cond.not_addressed: dentofacial anomalies and diseases of the jaws
  R-M30-M36        M30-M36 -> cond.not_addressed: systemic connective tissue disorders
  R-SPONDYLOLISTHESIS  M43.1 by region -> lumbar/thoracolumbar: cond.lumbar_degenerative (adult lumbar slip is mostly degenerative; codes.csv), else cond.not_addressed
  R-M40-M43        M40-M43 -> cond.not_addressed: kyphosis, lordosis, scoliosis, osteochondrosis, spondylolysis, fusion, dislocation
  R-M45-M46        M45, M46 -> cond.not_addressed: ankylosing spondylitis, axial spondyloarthritis, spinal infections
  R-SPONDYLOSIS    M47 by region -> lumbar/thoracolumbar: cond.lumbar_degenerative; cervical, thoracic, unknown: exclude.osteoarthritis (spondylosis is spinal OA)
  R-STENOSIS       M48.0 by region -> lumbar/thoracolumbar: cond.lumbar_degenerative; else cond.not_addressed (cervical/thoracic canal stenosis is a compressive neurological condition, not neck/back pain)
  R-M48-M49        M48, M49 -> cond.not_addressed: DISH, kissing spine, traumatic and fatigue fractures, collapsed vertebra, spondylopathies in other diseases
  R-CERVICAL-DISC  M50 -> cond.neck_pain: cervical disc disorders (codes.csv lists cervical disc degeneration as neck pain)
  R-DISC           M51 by region -> lumbar/thoracolumbar: cond.lumbar_degenerative; thoracic and unknown: cond.back_pain_other (the guideline's degenerative rule is lumbar)
  R-DORSOPATHY     M53.8 by region -> cervical: cond.neck_pain (codes.csv M53.82); thoracic, thoracolumbar, unknown: cond.back_pain_other; lumbar: cond.low_back_pain
  R-M53-OTHER      M53 -> cond.not_addressed: spinal instabilities (M53.2)
  R-PANNICULITIS   M54.0 -> cond.not_addressed: panniculitis of neck and back is a fat inflammation, not dorsalgia
  R-RADICULOPATHY  M54.1 by region -> cervical: cond.neck_pain; thoracic, unknown: cond.back_pain_other; thoracolumbar, lumbar: cond.lumbar_degenerative (codes.csv M54.16/M54.17)
  R-CERVICALGIA    M54.2 -> cond.neck_pain
  R-LBP            M54.3, M54.4, M54.5 -> cond.low_back_pain: sciatica, lumbago with sciatica, low back pain
  R-DORSALGIA      M54.6, M54.8 -> cond.back_pain_other: thoracic spine pain, other dorsalgia
  R-M60-M61        M60, M61 -> cond.not_addressed: myositis, calcification and ossification of muscle
  R-SPASM          M62.83 -> cond.myalgia_broad_optional: muscle spasm (back, calf, other) is pain of muscle
  R-M62-SOFT       M62.1, M62.4 -> cond.other_musculoskeletal: nontraumatic muscle rupture, muscle/tendon contracture
  R-M62-M63        M62, M63 -> cond.not_addressed: wasting, weakness, rhabdomyolysis, sarcopenia, immobility, muscle in other diseases
  R-INFECTION      M65.0, M65.1, M71.0, M71.1, M72.6, M72.8 -> cond.not_addressed: abscess and infective tendon/bursa/fascia disease (M72.8 includes abscess of fascia)
  R-FIBROMATOSIS   M72.4 -> cond.not_addressed: pseudosarcomatous fibromatosis
  R-M65-M77        M65-M77 -> cond.other_musculoskeletal: tendinitis, tenosynovitis, bursitis, fasciitis, enthesopathies, shoulder lesions
  R-MYALGIA        M79.1 -> cond.myalgia_broad_optional: myalgia (M79.18 is an exception)
  R-FIBROMYALGIA   M79.7 -> cond.chronic_pain_general: fibromyalgia is chronic widespread pain
  R-M79-MSK        M79.0, M79.4, M79.6, M79.89, M79.9 -> cond.other_musculoskeletal: rheumatism NOS, fat pad, pain in limb, other soft tissue disorders
  R-M79-OTHER      M79 -> cond.not_addressed: neuralgia, panniculitis, foreign body, hematoma, compartment syndrome
  R-M80-M94        M80-M94 -> cond.not_addressed: osteopathies and chondropathies
  R-M95-M99        M95-M99 -> cond.not_addressed: acquired deformities, postprocedural disorders (M96.1 excepted), periprosthetic fracture, biomechanical lesions
  R-NECK-SPRAIN    S13.4, S13.8, S13.9, S16.1 -> cond.neck_pain: sprain of cervical spine and neck, strain of neck muscle
  R-THYROID-SPRAIN S13.5 -> cond.other_musculoskeletal: sprain of the thyroid cartilage region is not neck (spinal) pain
  R-THORACIC-SPRAIN S23.3, S23.8, S23.9 -> cond.back_pain_other: sprain of thoracic spine or other/unspecified parts of thorax
  R-RIB-SPRAIN     S23.4 -> cond.other_musculoskeletal: sprain of ribs and sternum is chest-wall pain
  R-LUMBAR-SPRAIN  S33.5, S33.6, S33.8, S33.9 -> cond.low_back_pain: sprain of lumbar spine, sacroiliac joint, lumbar spine and pelvis
  R-INJURY-OTHER   S13, S16, S23, S29, S33, S39 -> cond.not_addressed: dislocation, traumatic disc rupture, laceration and other or unspecified injury
  R-HISTORY        Z80-Z87 -> cond.history: family and personal history, not a current condition

KIND of a parent (a code with children): when all its leaf descendants have one kind, that kind (rule
P-AGREE); otherwise the kind in PARENT_KINDS (rule P-MIXED), each with its reason. Principle: the kind of the
parent's own description when its site and meaning are clear (M54.5 Low back pain), the common non-lumbar kind of a
region-split family when its site is unknown, and cond.back_pain_other for back-pain parents of unknown site.

SITES: from the (lower-cased) description by SITE_PATTERNS ("lumbar region" -> low_back, "cervicothoracic" ->
neck + thoracic, "pelvic region and thigh" -> hip, ...), plus SITE_ADD (structure: a whole category is of one
region, e.g. M75 shoulder lesions), or replaced by SITE_SET (exceptions where the words mislead or say nothing).
"unspecified site", "other site", "vertebra(e)" without region, and history codes (Z80-Z87) give no site row.
  Site exceptions and structural additions:
  S-HEADACHE   G43, G44 add head_jaw: headache codes (G43.A none, G43.D trunk)
  S-JAW        M26, M27 add head_jaw: dentofacial and jaw disorders
  S-PATELLA    M22, M23 add knee: disorders of patella, internal derangement of knee
  S-SHOULDER   M75 add shoulder: shoulder lesions (bicipital tendinitis, rotator cuff)
  S-ITB        M76.3 add knee: iliotibial band syndrome is lateral knee pain (description says "leg")
  S-PERONEAL   M76.7 add ankle_foot: peroneal tendinitis is at the lateral ankle (description says "leg")
  S-T12L1      S23.17 add low_back: T12/L1 is the thoracolumbar junction
  S-FBSS       M96.1 = low_back: see X-M96.1
  S-OCCIPITAL  M54.81 = head_jaw + neck: occipital neuralgia (back of the head, from the C2 root)
  S-CERVICOGENIC G44.86 = head_jaw + neck: cervicogenic headache is head pain referred from the neck
  S-CERVICOCRANIAL M53.0 = neck + head_jaw
  S-CERVICOBRACHIAL M53.1 = neck + shoulder + arm
  S-FIBROMYALGIA M79.7 = widespread
  S-G43A       G43.A = none: cyclical vomiting has no musculoskeletal site
  S-HISTORY    Z80-Z87 = none: history codes carry no site
  Site patterns worth naming: "back" with no level ("Muscle spasm of back", M62.830, M62.5A) -> thoracic + low_back;
  "sciatica" -> low_back + leg; "lower extremity pain" (M51.36x/M51.37x) -> leg; "thorax" -> thoracic + trunk ("front
  wall" trunk, "back wall" thoracic); "multiple sites in spine" -> widespread; "swan-neck" (a finger deformity),
  "excluding foot", "regions of neck and back" and "without mention of ... lower extremity pain" name no site; a
  limb word that only gives the side ("Achilles tendinitis, right leg") counts only when nothing else named a site.

codes.csv codes that this release lacks are emitted with their codes.csv kind, sites from their display, and source
"codes.csv (not in this release)".
"""
from __future__ import annotations

import argparse
import collections
import csv
import importlib.metadata
import io
import os
import re
import sys
import warnings

warnings.simplefilter("ignore")  # the package may warn about defects in the data it loads; they are not ours
import simple_icd_10_cm as cm  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CODES_CSV = os.path.join(ROOT, "cards", "valuesets", "codes.csv")
OUT_CSV = os.path.join(ROOT, "cards", "valuesets", "icd10cm.csv")
OUT_DOC = os.path.join(ROOT, "cards", "valuesets", "ICD10CM-COVERAGE.md")
SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
EXPECTED_PACKAGE_VERSION = "1.5.0"

KINDS = [
    "cond.low_back_pain",
    "cond.lumbar_degenerative",
    "cond.neck_pain",
    "cond.back_pain_other",
    "cond.myofascial_trigger_point",
    "cond.myalgia_broad_optional",
    "cond.chronic_pain_general",
    "exclude.osteoarthritis",
    "exclude.patellofemoral_pain",
    "exclude.headache",
    "cond.other_musculoskeletal",
    "cond.history",
    "cond.not_addressed",
]
REGIONS = [
    "low_back", "thoracic", "neck", "head_jaw", "shoulder", "elbow", "wrist_hand", "hip", "knee", "ankle_foot",
    "arm", "leg", "trunk", "widespread",
]

LBP, DEG, NECK, BACK = "cond.low_back_pain", "cond.lumbar_degenerative", "cond.neck_pain", "cond.back_pain_other"
MYOF, MYAL, CHRON = "cond.myofascial_trigger_point", "cond.myalgia_broad_optional", "cond.chronic_pain_general"
OA, PFP, HEAD = "exclude.osteoarthritis", "exclude.patellofemoral_pain", "exclude.headache"
MSK, HIST, NA = "cond.other_musculoskeletal", "cond.history", "cond.not_addressed"

# ---------------------------------------------------------------------------------------------------------------
# Exceptions: one code (and, for a parent code, its descendants) -> kind. Checked before RULES.
EXCEPTIONS = {
    "M54.51": ("X-M54.51", DEG, "vertebrogenic low back pain is Modic-type endplate degeneration, chronic by nature"),
    "M96.1": ("X-M96.1", DEG, "failed back surgery syndrome; laminectomy for pain is overwhelmingly lumbar"),
    "M79.18": ("X-M79.18", MYOF, "codes.csv; the ICD-10-CM index sends myofascial pain syndrome to M79.18"),
    "M54.81": ("X-M54.81", HEAD, "occipital neuralgia is a headache disorder (ICHD-3 13.4), not back pain"),
    "M43.6": ("X-M43.6", NECK, "acquired torticollis is acute wry neck, a neck pain presentation"),
    "M62.85": ("X-M62.85", LBP, "lumbar multifidus dysfunction is coded for chronic mechanical low back pain"),
    "M54.9": ("X-M54.9", LBP, "codes.csv (VSAC backache sets): Backache NOS read as low back pain"),
    "M53.0": ("X-M53.0", NECK, "cervicocranial syndrome is a neck disorder"),
    "M53.1": ("X-M53.1", NECK, "codes.csv: cervicobrachial syndrome is neck pain radiating to the arm"),
    "M53.3": ("X-M53.3", BACK, "coccygodynia is back pain, but not lumbar low back pain"),
    "G43.A": ("X-G43.A", NA, "cyclical vomiting is not a headache"),
    "G43.D": ("X-G43.D", NA, "abdominal migraine is not a headache"),
    "M25.0": ("X-M25.0", NA, "hemarthrosis is not a pain/derangement problem"),
    "M25.1": ("X-M25.1", NA, "fistula of joint is not a pain/derangement problem"),
    "S29.011": ("X-S29.011", MSK, "strain of the front wall of the thorax is chest-wall pain"),
    "S29.012": ("X-S29.012", BACK, "strain of the back wall of the thorax is thoracic back pain"),
    "S29.019": ("X-S29.019", BACK, "thoracic muscle strain of unspecified wall: back pain of unknown site"),
    "S39.011": ("X-S39.011", MSK, "strain of abdominal wall muscle is not back pain"),
    "S39.012": ("X-S39.012", LBP, "strain of lower back muscle is low back pain"),
    "S39.013": ("X-S39.013", MSK, "strain of pelvic muscle is not lower back pain"),
}


def _by_region(cervical, thoracic, thoracolumbar, lumbar, unknown):
    return {"cervical": cervical, "thoracic": thoracic, "thoracolumbar": thoracolumbar, "lumbar": lumbar,
            "unknown": unknown}


def _cats(first, last, letter="M"):
    return tuple(f"{letter}{n:02d}" for n in range(first, last + 1))


# Block rules: (rule id, code prefixes, kind or region map, reason). First match wins.
RULES = [
    ("R-HEADACHE", ("G43", "G44"), HEAD, "headache: the guideline recommends against dry needling"),
    ("R-G89-CHRONIC", ("G89.2", "G89.4"), CHRON, "chronic pain, chronic pain syndrome"),
    ("R-G89-OTHER", ("G89",), NA, "central, acute (trauma, postprocedural) and neoplasm pain are not indications"),
    ("R-M00-M14", _cats(0, 14) + ("M1A",), NA, "infectious, inflammatory and crystal arthropathies"),
    ("R-OA", _cats(15, 19), OA, "osteoarthritis of any joint"),
    ("R-M20-M21", ("M20", "M21"), NA, "acquired limb deformities are structural, not pain conditions"),
    ("R-PFP", ("M22.2", "M22.4"), PFP, "patellofemoral disorders and chondromalacia patellae"),
    ("R-M22-OTHER", ("M22",), MSK, "patellar instability and other patellar derangements are not patellofemoral pain"),
    ("R-M23-M25", ("M23", "M24", "M25"), MSK, "knee and joint derangement, joint pain and stiffness"),
    ("R-TMJ", ("M26.6",), MSK, "temporomandibular joint disorders"),
    ("R-M26-M27", ("M26", "M27"), NA, "dentofacial anomalies and diseases of the jaws"),
    ("R-M30-M36", _cats(30, 36), NA, "systemic connective tissue disorders"),
    ("R-SPONDYLOLISTHESIS", ("M43.1",), _by_region(NA, NA, DEG, DEG, NA),
     "adult lumbar spondylolisthesis is mostly degenerative (codes.csv M43.16/M43.17)"),
    ("R-M40-M43", _cats(40, 43), NA, "spinal deformities, osteochondrosis, spondylolysis, fusion, dislocation"),
    ("R-M45-M46", ("M45", "M46"), NA, "ankylosing spondylitis, axial spondyloarthritis, spinal infections"),
    ("R-SPONDYLOSIS", ("M47",), _by_region(OA, OA, DEG, DEG, OA),
     "spondylosis is spinal osteoarthritis; lumbar spondylosis is named as degenerative lumbar disease"),
    ("R-STENOSIS", ("M48.0",), _by_region(NA, NA, DEG, DEG, NA),
     "lumbar stenosis is degenerative lumbar disease; cervical/thoracic stenosis is a compressive condition"),
    ("R-M48-M49", ("M48", "M49"), NA, "DISH, kissing spine, fractures, collapsed vertebra, spondylopathy in other disease"),
    ("R-CERVICAL-DISC", ("M50",), NECK, "cervical disc disorders (codes.csv: cervical disc degeneration)"),
    ("R-DISC", ("M51",), _by_region(NECK, BACK, DEG, DEG, BACK),
     "lumbar disc disease is degenerative lumbar disease; thoracic disc disease is thoracic back pain"),
    ("R-DORSOPATHY", ("M53.8",), _by_region(NECK, BACK, BACK, LBP, BACK),
     "other specified dorsopathies are regional spinal pain (codes.csv M53.82)"),
    ("R-M53-OTHER", ("M53",), NA, "spinal instabilities"),
    ("R-PANNICULITIS", ("M54.0",), NA, "panniculitis of neck and back is not dorsalgia"),
    ("R-RADICULOPATHY", ("M54.1",), _by_region(NECK, BACK, DEG, DEG, BACK),
     "radiculopathy: codes.csv puts lumbar in degenerative, cervical in neck pain"),
    ("R-CERVICALGIA", ("M54.2",), NECK, "cervicalgia"),
    ("R-LBP", ("M54.3", "M54.4", "M54.5"), LBP, "sciatica, lumbago with sciatica, low back pain"),
    ("R-DORSALGIA", ("M54.6", "M54.8"), BACK, "thoracic spine pain, other dorsalgia"),
    ("R-M60-M61", ("M60", "M61"), NA, "myositis, calcification and ossification of muscle"),
    ("R-SPASM", ("M62.83",), MYAL, "muscle spasm is pain of muscle"),
    ("R-M62-SOFT", ("M62.1", "M62.4"), MSK, "nontraumatic muscle rupture, muscle/tendon contracture"),
    ("R-M62-M63", ("M62", "M63"), NA, "wasting, weakness, rhabdomyolysis, sarcopenia, immobility, other diseases"),
    ("R-INFECTION", ("M65.0", "M65.1", "M71.0", "M71.1", "M72.6", "M72.8"), NA,
     "abscess and infective tendon, bursa and fascia disease"),
    ("R-FIBROMATOSIS", ("M72.4",), NA, "pseudosarcomatous fibromatosis"),
    ("R-M65-M77", _cats(65, 77), MSK, "tendinitis, tenosynovitis, bursitis, fasciitis, enthesopathies, shoulder lesions"),
    ("R-MYALGIA", ("M79.1",), MYAL, "myalgia"),
    ("R-FIBROMYALGIA", ("M79.7",), CHRON, "fibromyalgia is chronic widespread pain"),
    ("R-M79-MSK", ("M79.0", "M79.4", "M79.6", "M79.89", "M79.9"), MSK,
     "rheumatism NOS, infrapatellar fat pad, pain in limb, other soft tissue disorders"),
    ("R-M79-OTHER", ("M79",), NA, "neuralgia, panniculitis, foreign body, hematoma, compartment syndrome"),
    ("R-M80-M94", _cats(80, 94), NA, "osteopathies and chondropathies"),
    ("R-M95-M99", _cats(95, 99), NA, "acquired deformities, postprocedural disorders, periprosthetic fracture"),
    ("R-NECK-SPRAIN", ("S13.4", "S13.8", "S13.9", "S16.1"), NECK, "cervical sprain, neck muscle strain"),
    ("R-THYROID-SPRAIN", ("S13.5",), MSK, "sprain of the thyroid cartilage region"),
    ("R-THORACIC-SPRAIN", ("S23.3", "S23.8", "S23.9"), BACK, "sprain of thoracic spine or other parts of thorax"),
    ("R-RIB-SPRAIN", ("S23.4",), MSK, "sprain of ribs and sternum"),
    ("R-LUMBAR-SPRAIN", ("S33.5", "S33.6", "S33.8", "S33.9"), LBP, "sprain of lumbar spine, sacroiliac joint, pelvis"),
    ("R-INJURY-OTHER", ("S13", "S16", "S23", "S29", "S33", "S39"), NA,
     "dislocation, traumatic disc rupture, laceration, other or unspecified injury"),
    ("R-HISTORY", _cats(80, 87, "Z"), HIST, "family and personal history, not a current condition"),
]

# Parents whose leaf descendants disagree: (kind, reason). Every such parent must be listed here, and nothing else.
PARENT_KINDS = {
    "G43": (HEAD, "Migraine: every child is headache except cyclical vomiting and abdominal migraine (codes.csv: G43)"),
    "G89": (NA, "Pain NEC: acute, central and neoplasm pain are not indications; chronic pain has its own codes"),
    "M22": (MSK, "Disorder of patella: not specific for patellofemoral pain"),
    "M25": (MSK, "Other joint disorder: mostly joint pain, stiffness and derangement"),
    "M26": (NA, "Dentofacial anomalies: mostly dental; TMJ disorders have their own codes"),
    "M43": (NA, "Other deforming dorsopathies: mostly deformity"),
    "M43.1": (NA, "Spondylolisthesis, site unknown: only a lumbar site makes it degenerative lumbar disease"),
    "M47": (OA, "Spondylosis, site unknown: spinal osteoarthritis"),
    "M47.0": (OA, "Spondylotic artery compression syndromes, site unknown: spinal osteoarthritis"),
    "M47.01": (OA, "Spondylotic anterior spinal artery compression, site unknown: spinal osteoarthritis"),
    "M47.1": (OA, "Spondylosis with myelopathy, site unknown: spinal osteoarthritis"),
    "M47.2": (OA, "Spondylosis with radiculopathy, site unknown: spinal osteoarthritis"),
    "M47.8": (OA, "Other spondylosis, site unknown: spinal osteoarthritis"),
    "M47.81": (OA, "Spondylosis without myelopathy or radiculopathy, site unknown: spinal osteoarthritis"),
    "M47.89": (OA, "Other spondylosis, site unknown: spinal osteoarthritis"),
    "M48": (NA, "Other spondylopathies, site unknown: lumbar stenosis has its own codes"),
    "M48.0": (NA, "Spinal stenosis, site unknown: only a lumbar site makes it degenerative lumbar disease"),
    "M51": (BACK, "Thoracic, thoracolumbar and lumbosacral disc disorders, level unknown: back pain of unknown site"),
    "M51.0": (BACK, "Disc disorders with myelopathy, level unknown: back pain of unknown site"),
    "M51.1": (BACK, "Disc disorders with radiculopathy, level unknown: back pain of unknown site"),
    "M51.2": (BACK, "Other disc displacement, level unknown: back pain of unknown site"),
    "M51.3": (BACK, "Other disc degeneration, level unknown: back pain of unknown site"),
    "M51.4": (BACK, "Schmorl's nodes, level unknown: back pain of unknown site"),
    "M51.8": (BACK, "Other disc disorders, level unknown: back pain of unknown site"),
    "M53": (BACK, "Other and unspecified dorsopathies: back pain of unknown site"),
    "M53.8": (BACK, "Other specified dorsopathies, site unknown: back pain of unknown site"),
    "M54": (BACK, "Dorsalgia: back pain of unknown site"),
    "M54.1": (BACK, "Radiculopathy, site unknown: back pain of unknown site"),
    "M54.5": (LBP, "Low back pain (the pre-FY2022 code): codes.csv; low back pain of unspecified type"),
    "M54.8": (BACK, "Other dorsalgia: back pain (occipital neuralgia has its own code)"),
    "M62": (NA, "Other disorders of muscle: mostly wasting, weakness and metabolic muscle disease"),
    "M62.8": (NA, "Other specified disorders of muscle: mostly weakness, rhabdomyolysis, sarcopenia"),
    "M65": (MSK, "Synovitis and tenosynovitis: mostly non-infective (infective forms have their own codes)"),
    "M71": (MSK, "Other bursopathies: mostly non-infective (infective forms have their own codes)"),
    "M72": (MSK, "Fibroblastic disorders: mostly Dupuytren, knuckle pads, plantar fasciitis"),
    "M79": (NA, "Other and unspecified soft tissue disorders: no single meaning"),
    "M79.1": (MYAL, "Myalgia: codes.csv (myofascial pain syndrome is M79.18)"),
    "M79.8": (MSK, "Other specified soft tissue disorders: other soft tissue disorder"),
    "M96": (NA, "Postprocedural musculoskeletal disorders: postlaminectomy syndrome has its own code"),
    "S13": (NECK, "Dislocation and sprain at neck level: neck pain is what the record most plausibly means"),
    "S16": (NECK, "Injury of muscle, fascia and tendon at neck level: neck pain"),
    "S23": (BACK, "Dislocation and sprain of thorax: thoracic back pain of unknown site"),
    "S29": (NA, "Other and unspecified injuries of thorax: no single meaning"),
    "S29.0": (BACK, "Injury of muscle and tendon at thorax level: thoracic back pain of unknown site"),
    "S29.01": (BACK, "Strain of muscle and tendon of thorax: thoracic back pain of unknown site"),
    "S33": (LBP, "Dislocation and sprain of lumbar spine and pelvis: low back pain"),
    "S39": (NA, "Other injuries of abdomen, lower back, pelvis and genitals: no single meaning"),
    "S39.0": (NA, "Injury of muscle of abdomen, lower back and pelvis: no single meaning"),
    "S39.01": (LBP, "Strain of muscle of abdomen, lower back and pelvis: low back strain is the usual meaning"),
}

# Intended disagreements with codes.csv: (codes.csv set, code) -> reason.
INTENDED_DISAGREEMENTS = {
    ("cond.low_back_pain", "M54.51"): "team decision: vertebrogenic LBP is degenerative (cond.lumbar_degenerative)",
    ("cond.neck_pain", "M47.12"): "one kind per code: cervical spondylosis is exclude.osteoarthritis, with site.neck",
    ("cond.neck_pain", "M47.22"): "one kind per code: cervical spondylosis is exclude.osteoarthritis, with site.neck",
    ("cond.neck_pain", "M47.812"): "one kind per code: cervical spondylosis is exclude.osteoarthritis, with site.neck",
    ("cond.neck_pain", "M47.892"): "one kind per code: cervical spondylosis is exclude.osteoarthritis, with site.neck",
    ("exclude.osteoarthritis", "M47.26"): "one kind per code: lumbar spondylosis is cond.lumbar_degenerative",
    ("exclude.osteoarthritis", "M47.27"): "one kind per code: lumbar spondylosis is cond.lumbar_degenerative",
    ("exclude.osteoarthritis", "M47.816"): "one kind per code: lumbar spondylosis is cond.lumbar_degenerative",
    ("exclude.osteoarthritis", "M47.817"): "one kind per code: lumbar spondylosis is cond.lumbar_degenerative",
    ("exclude.osteoarthritis", "M47.896"): "one kind per code: lumbar spondylosis is cond.lumbar_degenerative",
    ("exclude.osteoarthritis", "M47.897"): "one kind per code: lumbar spondylosis is cond.lumbar_degenerative",
    ("cond.neck_pain", "M79.12"): "one kind per code: myalgia of head and neck muscles is cond.myalgia_broad_optional "
                                  "(also in codes.csv), with site.neck and site.head_jaw",
    ("cond.neck_pain", "G44.86"): "one kind per code: cervicogenic headache is exclude.headache (also in codes.csv), "
                                  "with site.neck and site.head_jaw",
}

# ---------------------------------------------------------------------------------------------------------------
# Sites. Patterns are applied in order to the lower-cased description; a pattern's match is blanked out before
# the next pattern runs, so "pelvic region and thigh" is hip and not also leg.
SITE_PATTERNS = [
    # words that name no site of their own, blanked first
    (r"swan-neck", ("wrist_hand",)),
    (r"excluding foot|without mention of lumbar back pain or lower extremity pain"
     r"|regions,? (of )?neck and back", ()),
    (r"multiple sites|\bgeneralized\b|polyosteoarthritis|\bpolyarthritis|\bpolyarticular|\bpolymyalgia|fibromyalgia",
     ("widespread",)),
    (r"head of femur|\bpelvic region and thigh\b|upper femoral epiphysis|\bcoxa\b|pseudocoxalgia", ("hip",)),
    (r"occipito-atlanto-axial", ("neck",)),
    (r"cervicothoracic", ("neck", "thoracic")),
    (r"thoracolumbar", ("thoracic", "low_back")),
    (r"post-thoracotomy", ("trunk",)),
    (r"front wall of thorax", ("trunk",)),
    (r"back wall of thorax", ("thoracic",)),
    (r"\bthorax\b", ("thoracic", "trunk")),
    (r"\bof back\b|, back$|, back, unspecified level", ("thoracic", "low_back")),
    (r"\bsciatica\b", ("low_back", "leg")),
    (r"lower extremity pain", ("leg",)),
    (r"\blower back\b|\blow back\b|\blumbago\b|\blumbar\b|\blumbosacral\b|\bsacral\b|sacrococcyg|sacroili|\bsacrum\b"
     r"|\bcoccyx\b|coccyg|\bmultifidus\b", ("low_back",)),
    (r"\bthoracic\b", ("thoracic",)),
    (r"\bcervical\b|cervicalgia|\bneck\b|torticollis|\bthyroid\b|\bc[0-7]/[ct][0-9]\b", ("neck",)),
    (r"temporomandibular|mastication|\bjaws?\b|mandib|maxill|dentofacial|malocclusion|\bteeth\b|\btooth\b"
     r"|\bdental\b|\bhead\b|\bskull\b|\bfacial\b|\bnose\b|\bears?\b", ("head_jaw",)),
    (r"\bshoulders?\b|rotator cuff|\bclavicle\b|\bscapula\b|acromioclavicular|glenohumeral", ("shoulder",)),
    (r"\belbows?\b|epicondyl|olecranon", ("elbow",)),
    (r"\bwrists?\b|hand\b|\bhands\b|\bfingers?\b|finger\(s\)|\bthumbs?\b|\bcarp|metacarp|\bpalmar\b|\bknuckle"
     r"|radial styloid|dupuytren|kienb|boutonni|heberden|bouchard", ("wrist_hand",)),
    (r"\bupper arm\b|\bforearm\b|\bhumerus\b|\bradius\b|\bulna\b", ("arm",)),
    (r"\bhips?\b|\bpelvis\b|\bpelvic\b|gluteal|\bpsoas\b|\biliac\b|\bilium\b|\bischium\b|trochanter|acetabul"
     r"|\bpubis\b|\bsymphysis\b", ("hip",)),
    (r"\bknees?\b|patell|menisc|cruciate|popliteal|pellegrini|\bplica\b", ("knee",)),
    (r"\bankles?\b|foot\b|\bfeet\b|\btoes?\b|toe\(s\)|\bhallux\b|\bheel\b|calcane|achilles|\bplantar\b|metatars"
     r"|\btars|bunion|posterior tibial", ("ankle_foot",)),
    (r"\blower leg\b|\bthigh\b|\bcalf\b|\bfemur\b|\bfemoral\b|\btibia\b|\bfibula\b|anterior tibial", ("leg",)),
    (r"\bribs?\b|rib cage|\bchest\b|\bsternum\b|\bsternal\b|sternoclavicular|chondrosternal|chondrocostal|costochondral"
     r"|\babdom|\btrunk\b", ("trunk",)),
]
# Limb words that only say which side ("Achilles tendinitis, right leg") count only when nothing else named a site.
SITE_FALLBACK = [
    (r"\blegs?\b|\blower (limb|extremity)\b", ("leg",)),
    (r"\barms?\b|\bupper (limb|extremity)\b", ("arm",)),
]
_SITE_RE = [(re.compile(p), regions) for p, regions in SITE_PATTERNS]
_SITE_FALLBACK_RE = [(re.compile(p), regions) for p, regions in SITE_FALLBACK]

# (id, code prefixes, regions added)
SITE_ADD = [
    ("S-HEADACHE", ("G43", "G44"), ("head_jaw",)),
    ("S-JAW", ("M26", "M27"), ("head_jaw",)),
    ("S-PATELLA", ("M22", "M23"), ("knee",)),
    ("S-SHOULDER", ("M75",), ("shoulder",)),
    ("S-ITB", ("M76.3",), ("knee",)),
    ("S-PERONEAL", ("M76.7",), ("ankle_foot",)),
    ("S-T12L1", ("S23.17",), ("low_back",)),
]
# (id, code prefixes, regions that replace everything else); checked first, first match wins
SITE_SET = [
    ("S-FBSS", ("M96.1",), ("low_back",)),
    ("S-OCCIPITAL", ("M54.81",), ("head_jaw", "neck")),
    ("S-CERVICOGENIC", ("G44.86",), ("head_jaw", "neck")),
    ("S-CERVICOCRANIAL", ("M53.0",), ("neck", "head_jaw")),
    ("S-CERVICOBRACHIAL", ("M53.1",), ("neck", "shoulder", "arm")),
    ("S-FIBROMYALGIA", ("M79.7",), ("widespread",)),
    ("S-G43A", ("G43.A",), ()),
    ("S-HISTORY", _cats(80, 87, "Z"), ()),
]

def in_scope(code: str) -> bool:
    cat = code[:3]
    return (cat[0] == "M" or cat in ("G43", "G44", "G89", "S13", "S16", "S23", "S29", "S33", "S39")
            or "Z80" <= cat <= "Z87")


def starts(code: str, prefixes) -> bool:
    return any(code.startswith(p) for p in prefixes)


def spine_region(desc: str) -> str:
    d = desc.lower()
    if "multiple sites" in d or "unspecified site" in d or "site unspecified" in d:
        return "unknown"
    found = set()
    if "occipito-atlanto-axial" in d or "cervicothoracic" in d or re.search(r"\bcervical\b", d):
        found.add("cervical")
    if "thoracolumbar" in d:
        found.add("thoracolumbar")
    if re.search(r"\bthoracic\b", d):
        found.add("thoracic")
    if re.search(r"\blumbar\b|\blumbosacral\b|\bsacral\b|sacrococcygeal", d):
        found.add("lumbar")
    return found.pop() if len(found) == 1 else "unknown"


def leaf_kind(code: str, desc: str):
    for exc_code, (rid, kind, _reason) in EXCEPTIONS.items():
        if code == exc_code or code.startswith(exc_code):
            return kind, rid
    for rid, prefixes, kind, _reason in RULES:
        if starts(code, prefixes):
            if isinstance(kind, dict):
                return kind[spine_region(desc)], rid
            return kind, rid
    return None, None


def sites_for(code: str, desc: str):
    for sid, prefixes, regions in SITE_SET:
        if starts(code, prefixes):
            return set(regions)
    d = desc.lower()
    found = set()
    for rx, regions in _SITE_RE:
        if rx.search(d):
            found.update(regions)
            d = rx.sub(" ", d)
    for sid, prefixes, regions in SITE_ADD:
        if starts(code, prefixes):
            if not (sid == "S-HEADACHE" and code.startswith("G43.D")):
                found.update(regions)
    if not found:
        for rx, regions in _SITE_FALLBACK_RE:
            if rx.search(d):
                found.update(regions)
    return found


def package_release():
    version = importlib.metadata.version("simple-icd-10-cm")
    inner = sys.modules.get("simple_icd_10_cm.simple_icd_10_cm")
    tabular = getattr(inner, "_classification_data_package_file_name", "") if inner else ""
    m = re.search(r"([A-Za-z]+)-(\d+)-(\d{4})", tabular) or re.search(r"([A-Za-z]+)-(\d{4})", tabular)
    if m and len(m.groups()) == 3:
        month, day, year = m.group(1), int(m.group(2)), int(m.group(3))
    elif m:
        month, day, year = m.group(1), 1, int(m.group(2))
    else:
        return version, tabular or "unknown release", "ICD-10-CM (unknown release)"
    # The fiscal year starts on October 1: an October-December release belongs to the next fiscal year.
    fy = year + 1 if month.lower() in ("october", "november", "december") else year
    label = f"FY{fy} ({month} {year})" if month.lower() != "october" else f"FY{fy}"
    return version, tabular, f"CMS ICD-10-CM {label}"


def range_label(code: str) -> str:
    """The block of an M code (as the package names it), G43-G44, G89, the S category, Z80-Z84 or Z85-Z87."""
    cat = code[:3]
    if cat in ("G43", "G44"):
        return "G43-G44"
    if cat[0] == "Z":
        return "Z80-Z84" if cat <= "Z84" else "Z85-Z87"
    if cat[0] == "M":
        return cm.get_parent(cat) or cat
    return cat


def classify():
    codes = sorted({c for c in cm.get_all_codes(True) if in_scope(c) and cm.is_category_or_subcategory(c)})
    desc = {c: cm.get_description(c) for c in codes}
    kinds, rules, errors = {}, {}, []
    leaves = [c for c in codes if cm.is_leaf(c)]
    for c in leaves:
        k, r = leaf_kind(c, desc[c])
        if k is None:
            errors.append(f"no rule for {c} {desc[c]}")
        kinds[c], rules[c] = k, r
    mixed = {}
    for c in codes:
        if c in kinds:
            continue
        below = [d for d in cm.get_descendants(c) if d in kinds]
        ks = {kinds[d] for d in below}
        if len(ks) == 1:
            kinds[c] = ks.pop()
            rs = {rules[d] for d in below}
            rules[c] = "P-AGREE" + (f" ({rs.pop()})" if len(rs) == 1 else "")
        else:
            mixed[c] = collections.Counter(kinds[d] for d in below)
            if c in PARENT_KINDS:
                kinds[c], rules[c] = PARENT_KINDS[c][0], "P-MIXED"
            else:
                errors.append(f"parent {c} {desc[c]} has children of several kinds {dict(mixed[c])}: "
                              f"add it to PARENT_KINDS")
    for c in PARENT_KINDS:
        if c not in mixed:
            errors.append(f"PARENT_KINDS lists {c}, which is not a parent with children of several kinds")
    sites = {c: sites_for(c, desc[c]) for c in codes}
    return codes, desc, kinds, rules, sites, mixed, errors


def read_codes_csv():
    with open(CODES_CSV, newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["system"] == SYSTEM]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when an output is out of date")
    args = ap.parse_args()

    version, tabular, release = package_release()
    if version != EXPECTED_PACKAGE_VERSION:
        print(f"warning: simple-icd-10-cm {version} (the rules were reviewed against {EXPECTED_PACKAGE_VERSION})",
              file=sys.stderr)
    source_prefix = f"{release} via simple-icd-10-cm {version}"

    # every rule id must be documented at the top of this file
    doc = __doc__
    for rid in [r[0] for r in RULES] + [v[0] for v in EXCEPTIONS.values()] + [s[0] for s in SITE_ADD + SITE_SET]:
        if rid not in doc:
            sys.exit(f"rule {rid} is not documented in the module docstring")

    codes, desc, kinds, rules, sites, mixed, errors = classify()

    # codes.csv: agreement, and codes this release lacks
    cc_rows = read_codes_csv()
    in_release = set(codes)
    disagreements, missing, out_of_scope = [], {}, set()
    for r in cc_rows:
        code, cset = r["code"], r["set"]
        if cset not in KINDS:
            continue
        if code not in in_release:
            if cm.is_valid_item(code):
                out_of_scope.add((code, r["display"]))
            else:
                missing.setdefault(code, []).append(r)
            continue
        if kinds[code] != cset:
            disagreements.append((cset, code, kinds[code], INTENDED_DISAGREEMENTS.get((cset, code))))
    listed = {(d[0], d[1]) for d in disagreements}
    for key in INTENDED_DISAGREEMENTS:
        if key not in listed:
            errors.append(f"INTENDED_DISAGREEMENTS lists {key}, which is not a disagreement")

    rows = []
    for c in codes:
        src = f"{source_prefix}; rule {rules[c]}"
        rows.append((kinds[c], c, desc[c], src))
        # A code the guideline does not address names no condition the rules weigh, so its site would never be
        # read: site rows are written only for codes with a kind (this halves the file the service embeds).
        if kinds[c] == "cond.not_addressed":
            continue
        for reg in sorted(sites[c]):
            rows.append((f"site.{reg}", c, desc[c], src))
    extra_codes = []
    for code, crs in sorted(missing.items()):
        k = crs[0]["set"]
        if len({r["set"] for r in crs}) > 1:
            errors.append(f"codes.csv lists {code} (not in this release) in several kind sets")
        extra_codes.append(code)
        kinds[code], desc[code], rules[code] = k, crs[0]["display"], "codes.csv"
        sites[code] = sites_for(code, crs[0]["display"])
        rows.append((k, code, crs[0]["display"], "codes.csv (not in this release)"))
        for reg in sorted(sites[code]):
            rows.append((f"site.{reg}", code, crs[0]["display"], "codes.csv (not in this release)"))
    rows.sort(key=lambda r: (r[1], r[0]))
    seen = set()
    for r in rows:
        if (r[0], r[1]) in seen:
            errors.append(f"duplicate row {r[0]} {r[1]}")
        seen.add((r[0], r[1]))
        assert r[0] in KINDS or r[0][5:] in REGIONS, r

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["set", "system", "code", "display", "source"])
    for s, c, d, src in rows:
        w.writerow([s, SYSTEM, c, d, src])
    csv_text = buf.getvalue()

    # ---- report
    all_codes = codes + extra_codes
    by_kind = collections.Counter(kinds[c] for c in all_codes)
    by_site = collections.Counter(reg for c in all_codes for reg in sites[c])
    by_range = collections.defaultdict(collections.Counter)
    for c in codes:
        by_range[range_label(c)][kinds[c]] += 1
    for c in extra_codes:
        by_range["codes.csv only"][kinds[c]] += 1
    out = []
    out.append(f"Release: {tabular} ({release}), simple-icd-10-cm {version}")
    out.append(f"Codes: {len(all_codes)} ({len(codes)} from the release, {len(extra_codes)} from codes.csv only; "
               f"{sum(1 for c in codes if cm.is_leaf(c))} leaves); rows: {len(rows)}; CSV bytes: "
               f"{len(csv_text.encode())}")
    out.append("")
    out.append("Codes by kind:")
    for k in KINDS:
        out.append(f"  {k:32s} {by_kind[k]:6d}")
    out.append("Site rows by region:")
    for reg in REGIONS:
        out.append(f"  site.{reg:27s} {by_site[reg]:6d}")
    out.append("Codes by range:")
    for rg in sorted(by_range):
        parts = ", ".join(f"{k.split('.', 1)[1]} {n}" for k, n in sorted(by_range[rg].items(),
                                                                          key=lambda kv: KINDS.index(kv[0])))
        out.append(f"  {rg:10s} {sum(by_range[rg].values()):5d}  {parts}")
    out.append("Disagreements with codes.csv:")
    for cset, code, ours, why in sorted(disagreements, key=lambda d: (d[1], d[0])):
        out.append(f"  {code:9s} codes.csv {cset} -> {ours}: " + (f"intended: {why}" if why else "NOT INTENDED"))
    if not disagreements:
        out.append("  none")
    out.append("codes.csv ICD-10-CM codes of a kind set outside these ranges (not emitted): " +
               (", ".join(sorted(c for c, _ in out_of_scope)) or "none"))
    out.append("codes.csv ICD-10-CM codes not in this release (emitted from codes.csv): " +
               (", ".join(extra_codes) or "none"))
    print("\n".join(out))

    unintended = [d for d in disagreements if not d[3]]
    if errors or unintended:
        for e in errors:
            print("error: " + e, file=sys.stderr)
        for d in unintended:
            print(f"error: codes.csv lists {d[1]} in {d[0]}, classified {d[2]}: fix the rules or add it to "
                  f"INTENDED_DISAGREEMENTS", file=sys.stderr)
        sys.exit(2)

    # ---- generated part of the coverage doc
    gen = generated_doc(tabular, release, version, codes, extra_codes, kinds, sites, by_kind, by_site, by_range,
                        disagreements, mixed, out_of_scope, len(rows), len(csv_text.encode()), rules)
    doc_text = None
    if os.path.exists(OUT_DOC):
        with open(OUT_DOC, encoding="utf-8") as f:
            old = f.read()
        m = re.search(r"(<!-- BEGIN GENERATED[^\n]*-->\n)(.*?)(<!-- END GENERATED -->)", old, re.S)
        if m:
            doc_text = old[:m.start(2)] + gen + old[m.end(2):]
    stale = []
    old_csv = open(OUT_CSV, encoding="utf-8").read() if os.path.exists(OUT_CSV) else None
    if old_csv != csv_text:
        stale.append(OUT_CSV)
    if doc_text is not None and doc_text != old:
        stale.append(OUT_DOC)
    if args.check:
        if stale:
            print("out of date: " + ", ".join(os.path.relpath(p, ROOT) for p in stale), file=sys.stderr)
            sys.exit(1)
        print("up to date")
        return
    with open(OUT_CSV, "w", encoding="utf-8", newline="") as f:
        f.write(csv_text)
    if doc_text is not None:
        with open(OUT_DOC, "w", encoding="utf-8") as f:
            f.write(doc_text)
    else:
        print(f"note: {OUT_DOC} is missing or has no GENERATED markers; its tables were not refreshed",
              file=sys.stderr)


def generated_doc(tabular, release, version, codes, extra_codes, kinds, sites, by_kind, by_site, by_range,
                  disagreements, mixed, out_of_scope, nrows, nbytes, rules):
    short = {k: k.split(".", 1)[1] for k in KINDS}
    L = []
    L.append(f"Generated by `cards/tools/classify_icd10cm.py` from `{tabular}` ({release}), "
             f"simple-icd-10-cm {version}: {len(codes) + len(extra_codes)} codes "
             f"({sum(1 for c in codes if cm.is_leaf(c))} leaves), {nrows} rows, {nbytes} bytes.")
    L.append("")
    L.append("### Codes by range and kind")
    L.append("")
    used = [k for k in KINDS if by_kind[k]]
    L.append("| range | total | " + " | ".join(short[k] for k in used) + " |")
    L.append("|---|---:|" + "---:|" * len(used))
    for rg in sorted(by_range):
        title = cm.get_description(rg) if cm.is_valid_item(rg) else ""
        name = f"{rg} {title}".strip()
        L.append(f"| {name} | {sum(by_range[rg].values())} | " +
                 " | ".join(str(by_range[rg][k] or "") for k in used) + " |")
    L.append(f"| **all** | **{sum(by_kind.values())}** | " + " | ".join(f"**{by_kind[k]}**" for k in used) + " |")
    L.append("")
    L.append("### Site rows")
    L.append("")
    L.append("| region | codes |")
    L.append("|---|---:|")
    for reg in REGIONS:
        L.append(f"| site.{reg} | {by_site[reg]} |")
    L.append(f"| (no site row) | {sum(1 for c in list(codes) + extra_codes if not sites[c])} |")
    L.append("")
    L.append("### Rules")
    L.append("")
    L.append("| rule | codes | kind | codes classified | reason |")
    L.append("|---|---|---|---:|---|")
    count = collections.Counter()
    for c in codes:
        m = re.match(r"P-AGREE \((.*)\)$", rules[c])
        count[m.group(1) if m else rules[c]] += 1
    for code, (rid, kind, reason) in EXCEPTIONS.items():
        L.append(f"| {rid} | {code} | {kind} | {count[rid]} | {reason} |")
    for rid, prefixes, kind, reason in RULES:
        k = kind if isinstance(kind, str) else "by region: " + ", ".join(
            f"{reg} {short[v]}" for reg, v in kind.items())
        L.append(f"| {rid} | {_prefix_text(prefixes)} | {k} | {count[rid]} | {reason} |")
    L.append("")
    L.append("### Parents whose children disagree")
    L.append("")
    L.append("| code | description | children's kinds (leaves) | kind given | reason |")
    L.append("|---|---|---|---|---|")
    for c in sorted(mixed):
        ks = ", ".join(f"{short[k]} {n}" for k, n in sorted(mixed[c].items(), key=lambda kv: KINDS.index(kv[0])))
        L.append(f"| {c} | {cm.get_description(c)} | {ks} | {short[PARENT_KINDS[c][0]]} | {PARENT_KINDS[c][1]} |")
    L.append("")
    L.append("### Disagreements with codes.csv")
    L.append("")
    L.append("| code | codes.csv set | kind here | resolution |")
    L.append("|---|---|---|---|")
    for cset, code, ours, why in sorted(disagreements, key=lambda d: (d[1], d[0])):
        L.append(f"| {code} | {cset} | {ours} | {why} |")
    L.append("")
    L.append("codes.csv ICD-10-CM codes of a kind set that this release lacks (emitted from codes.csv): " +
             (", ".join(extra_codes) or "none") + ".  ")
    L.append("codes.csv ICD-10-CM codes of a kind set outside these ranges (not emitted here; codes.csv keeps them): " +
             (", ".join(f"{c} {d}" for c, d in sorted(out_of_scope)) or "none") + ".")
    L.append("")
    return "\n".join(L)


def _prefix_text(prefixes):
    if len(prefixes) <= 6:
        return ", ".join(prefixes)
    numbered = [p for p in prefixes if re.fullmatch(r"[A-Z]\d\d", p)]
    others = [p for p in prefixes if p not in numbered]
    return ", ".join([f"{numbered[0]}-{numbered[-1]}"] + others)


if __name__ == "__main__":
    main()
