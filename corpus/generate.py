#!/usr/bin/env python3
"""Generates Ward's labelled PHI test corpus: synthetic, seeded, deterministic.

Regenerate (from the repository root; Python 3.11):

    python3 corpus/generate.py

On first use it creates a virtual environment with the pinned Faker under
${WARD_CORPUS_VENV:-${XDG_CACHE_HOME:-~/.cache}/ward/corpus-venv} and re-runs
itself there. The output (corpus/messages/*.eml and corpus/labels.json) is
committed, so the tests never need Faker. Same seed, same Faker and same
Python/zlib give byte-identical output.

Everything here is invented: names, addresses and companies come from Faker;
identifiers are random values that follow each identifier's real format and
check-digit rules. There is no real PHI in the corpus.

Labels (see corpus/README.md): for every message, `kinds` is the set of
detector kinds truly present in its content (Subject, bodies, attachments;
not the address headers), and `phi` follows Ward's default policy rule:

    phi = any of ssn, mbi, mrn, dob, health_plan_id, icd10, credit_card
          or (health_terms and (phone or email_address))

npi and dea alone identify providers, not patients: labelled, but not PHI.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

FAKER_VERSION = "40.54.0"
SEED = 20250314


VERIFY_PACKAGES = ["pypdf", "openpyxl", "python-docx", "python-pptx"]


def ensure_faker() -> None:
    verify = "--verify" in sys.argv
    try:
        import faker  # noqa: F401

        if verify:
            import docx  # noqa: F401
            import openpyxl  # noqa: F401
            import pptx  # noqa: F401
            import pypdf  # noqa: F401
        if faker.VERSION == FAKER_VERSION:
            return
    except ImportError:
        pass
    if os.environ.get("WARD_CORPUS_BOOTSTRAPPED"):
        sys.exit(f"Faker {FAKER_VERSION} is not importable in {sys.executable}")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    venv = Path(os.environ.get("WARD_CORPUS_VENV", cache / "ward" / "corpus-venv"))
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pkgs = [f"Faker=={FAKER_VERSION}"] + (VERIFY_PACKAGES if verify else [])
    subprocess.run([str(py), "-m", "pip", "install", "-q", *pkgs], check=True)
    env = dict(os.environ, WARD_CORPUS_BOOTSTRAPPED="1")
    os.execve(str(py), [str(py), os.path.abspath(__file__), *sys.argv[1:]], env)


if __name__ == "__main__":
    ensure_faker()

import random  # noqa: E402

from faker import Faker  # noqa: E402

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "messages"

rng = random.Random(SEED)
FAKERS: dict[str, Faker] = {}
for i, loc in enumerate(["en_US", "es_MX", "fr_FR", "de_DE", "pl_PL", "cs_CZ"]):
    f = Faker(loc)
    f.seed_instance(SEED + i)
    FAKERS[loc] = f
fake = FAKERS["en_US"]

# Markers inside logical text. MARK: a split point inside an identifier (an
# HTML tag boundary, a quoted-printable soft line break, a PDF TJ kerning
# split, a DOCX/XLSX/PPTX run boundary, an RFC 2047 encoded-word boundary).
# NB: a space inside an identifier (never wrapped there).
MARK = "\x1f"
NB = "\x1e"


def clean(s: str) -> str:
    return s.replace(MARK, "").replace(NB, " ")


def pick(seq):
    return seq[rng.randrange(len(seq))]


def chance(p: float) -> bool:
    return rng.random() < p


def marked(value: str) -> str:
    """The value with a split marker at a random interior point and its
    spaces protected."""
    v = value.replace(" ", NB)
    if len(v) < 3:
        return v
    i = rng.randint(1, len(v) - 1)
    return v[:i] + MARK + v[i:]


def ascii_fold(s: str) -> str:
    s = s.replace("ł", "l").replace("Ł", "L").replace("ß", "ss")
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()


# ---------------------------------------------------------------------------
# Check digits and identifier generators (the real rules)


def luhn_valid(num: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(num)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_check_digit(payload: str) -> str:
    for c in "0123456789":
        if luhn_valid(payload + c):
            return c
    raise AssertionError


def npi_valid(n: str) -> bool:
    return len(n) == 10 and n[0] in "12" and luhn_valid("80840" + n)


def dea_valid(s: str) -> bool:
    if not re.fullmatch(r"[A-Z][A-Z9]\d{7}", s):
        return False
    d = [int(c) for c in s[2:]]
    return (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10 == d[6]


def digits(n: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


BAD_SSNS = {"078051120", "219099999", "123456789"}


def ssn_digits(min_area: int = 1) -> str:
    while True:
        a = rng.randint(min_area, 899)
        if a == 666:
            continue
        v = f"{a:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
        if v not in BAD_SSNS:
            return v


MBI_LETTERS = "ACDEFGHJKMNPQRTUVWXY"  # A-Z without S L O I B Z


def mbi() -> str:
    an = MBI_LETTERS + "0123456789"
    return (
        pick("123456789")
        + pick(MBI_LETTERS)
        + pick(an)
        + pick("0123456789")
        + pick(MBI_LETTERS)
        + pick(an)
        + pick("0123456789")
        + pick(MBI_LETTERS)
        + pick(MBI_LETTERS)
        + digits(2)
    )


def npi() -> str:
    first9 = pick("12") + digits(8)
    n = first9 + luhn_check_digit("80840" + first9)
    assert npi_valid(n)
    return n


def not_npi_10(first: str | None = None) -> str:
    """A 10-digit number starting with 1 or 2 that fails the NPI check."""
    n = (first or pick("1112")) + digits(9)
    if luhn_valid("80840" + n):
        n = n[:-1] + str((int(n[-1]) + 1) % 10)
    assert not npi_valid(n)
    return n


DEA_FIRST = "ABCDEFGHJKLMPRSTUX"


def dea(last_name: str) -> str:
    initial = ascii_fold(last_name)[:1].upper()
    if not initial.isalpha():
        initial = pick("ABCDEFGHIJKLMNOPRSTW")
    d = [rng.randrange(10) for _ in range(6)]
    check = (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10
    s = pick(DEA_FIRST) + initial + "".join(map(str, d)) + str(check)
    assert dea_valid(s)
    return s


def dea_shaped_invalid(prefix: str) -> str:
    d = [rng.randrange(10) for _ in range(6)]
    check = (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5]) + rng.randint(1, 9)) % 10
    s = prefix + "".join(map(str, d)) + str(check)
    assert not dea_valid(s)
    return s


def credit_card() -> str:
    brand = pick(["visa", "visa", "mc", "mc2", "amex", "discover", "discover65"])
    if brand == "visa":
        payload = "4" + digits(14)
    elif brand == "mc":
        payload = "5" + pick("12345") + digits(13)
    elif brand == "mc2":
        payload = str(rng.randint(2221, 2720)) + digits(11)
    elif brand == "amex":
        payload = pick(["34", "37"]) + digits(12)
    elif brand == "discover":
        payload = "6011" + digits(11)
    else:
        payload = "65" + digits(13)
    num = payload + luhn_check_digit(payload)
    sep = pick([" ", " ", "-", ""])
    if len(num) == 15:
        groups = [num[:4], num[4:10], num[10:]]
    else:
        groups = [num[i : i + 4] for i in range(0, 16, 4)]
    return sep.join(groups)


def luhn_failing_16() -> str:
    n = pick("45") + digits(15)
    if luhn_valid(n):
        n = n[:-1] + str((int(n[-1]) + 1) % 10)
    return " ".join(n[i : i + 4] for i in range(0, 16, 4))


AREA_CODES = [
    "617", "508", "781", "312", "773", "415", "510", "206", "303", "404", "512", "614", "713",
    "214", "305", "602", "503", "612", "919", "410", "443", "347", "718", "646", "201", "212",
    "202", "215", "267", "860", "972", "480", "858", "407", "813",
]  # fmt: skip


def phone(style: str | None = None) -> str:
    style = style or pick(["paren", "paren", "dash", "dash", "dot", "intl", "one", "space", "parennospace"])
    area = pick([a for a in AREA_CODES if a[0] != "2"] if style == "bare" else AREA_CODES)
    while True:
        ex = rng.randint(200, 999)
        if ex % 100 != 11 and ex != 555:
            break
    line = f"{rng.randint(0, 9999):04d}"
    ex = str(ex)
    return {
        "paren": f"({area}) {ex}-{line}",
        "parennospace": f"({area}){ex}-{line}",
        "dash": f"{area}-{ex}-{line}",
        "dot": f"{area}.{ex}.{line}",
        "intl": f"+1 {area} {ex} {line}",
        "one": f"1-{area}-{ex}-{line}",
        "space": f"{area} {ex} {line}",
        "bare": f"{area}{ex}{line}",
    }[style]


def dob_date() -> date:
    return date(rng.randint(1931, 2016), rng.randint(1, 12), rng.randint(1, 28))


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]  # fmt: skip


def fmt_date(d: date, style: str | None = None) -> str:
    style = style or pick(["us", "us", "iso", "long", "dmy", "short", "usdash", "monabbr"])
    m = MONTHS[d.month - 1]
    return {
        "us": f"{d.month:02d}/{d.day:02d}/{d.year}",
        "iso": d.isoformat(),
        "long": f"{m} {d.day}, {d.year}",
        "dmy": f"{d.day} {m[:3]} {d.year}",
        "short": f"{d.month}/{d.day}/{d.year % 100:02d}",
        "usdash": f"{d.month:02d}-{d.day:02d}-{d.year}",
        "monabbr": f"{m[:3]} {d.day}, {d.year}",
    }[style]


def business_date() -> date:
    return date(2025, 1, 6) + timedelta(days=rng.randint(0, 330))


ICD10 = """E11.9 E11.65 E11.22 E11.40 E10.9 E78.5 E78.00 E03.9 E66.9 E55.9 E87.6 E28.2 I10 I11.9
I25.10 I48.91 I50.9 I63.9 I21.4 I73.9 I20.9 I49.9 J45.909 J45.40 J44.9 J44.1 J18.9 J06.9 J02.9
J20.9 J30.9 F32.A F32.9 F33.1 F41.1 F41.9 F20.9 F31.9 F43.10 F90.0 F11.20 F10.20 F17.210 G43.909
G40.909 G30.9 G20 G47.33 G35 G89.29 M17.11 M17.0 M54.50 M06.9 M81.0 M25.561 M79.7 K21.9 K50.90
K57.30 K58.9 K29.70 K80.20 N18.30 N39.0 N40.0 N17.9 Z79.4 Z79.01 Z79.899 Z00.00 Z23 Z12.31
Z51.11 Z30.011 Z87.891 Z34.00 Z71.3 C50.911 C61 C34.90 C18.9 C43.9 C91.10 C83.30 B20 B18.2
A41.9 L03.115 L40.0 O09.90 O24.419 O80 R10.9 R51.9 R07.9 R50.9 R05.9 R73.03 D64.9 D50.9 H40.9
H25.9 S72.001A S82.101A T78.40XA U07.1""".split()

DIAGNOSES = [
    "type 2 diabetes", "type 1 diabetes", "hypertension", "asthma", "COPD", "congestive heart failure",
    "atrial fibrillation", "major depressive disorder", "breast cancer", "pneumonia",
    "chronic kidney disease", "hypothyroidism", "HIV", "hepatitis C", "schizophrenia", "bipolar disorder",
    "migraine", "osteoarthritis", "rheumatoid arthritis", "opioid use disorder", "multiple sclerosis",
    "Crohn's disease", "sepsis", "gestational diabetes", "prostate cancer", "melanoma", "leukemia",
    "lymphoma", "epilepsy", "Alzheimer's disease", "dementia", "Parkinson's disease", "cellulitis",
    "urinary tract infection", "generalized anxiety disorder", "coronary artery disease", "sleep apnea",
    "anemia", "lung cancer", "colon cancer", "PTSD", "alcohol use disorder", "hyperlipidemia",
]  # fmt: skip
MEDICATIONS = [
    "metformin", "insulin glargine", "lisinopril", "atorvastatin", "amlodipine", "sertraline",
    "fluoxetine", "albuterol", "warfarin", "apixaban", "levothyroxine", "oxycodone", "buprenorphine",
    "methadone", "prednisone", "gabapentin", "adalimumab", "tamoxifen", "losartan", "omeprazole",
    "semaglutide", "furosemide", "hydrocodone", "amoxicillin", "escitalopram", "quetiapine",
    "clopidogrel", "montelukast", "hydrochlorothiazide",
]  # fmt: skip
PROCEDURES = [
    "chemotherapy", "dialysis", "colonoscopy", "appendectomy", "knee replacement",
    "coronary artery bypass", "cardiac catheterization", "mammogram", "biopsy", "radiation therapy",
    "cesarean section", "hysterectomy", "echocardiogram", "upper endoscopy", "lumbar puncture",
    "hip replacement", "cataract surgery", "spinal fusion", "CT scan", "physical therapy",
]  # fmt: skip
# General health topics for staff newsletters (no patient).
NEWSLETTER_TERMS = [
    "flu shot", "flu vaccine", "influenza vaccination", "blood pressure screening", "diabetes",
    "hypertension", "COVID-19 booster", "cholesterol screening", "skin cancer screening", "mammogram",
]  # fmt: skip
HEALTH_VOCAB = sorted(set(DIAGNOSES + MEDICATIONS + PROCEDURES + NEWSLETTER_TERMS))
# Words that must not appear in mail labelled without health_terms either.
CAUTION_WORDS = ["cancer", "diabetes", "vaccin", "surgery", "chemo", "diagnosed", "medication",
                 "prescri", "symptom", "disease", "disorder", "therapy", "infection", "flu"]  # fmt: skip

ORGS = [
    ("Riverside Regional Medical Center", "riversidermc.org", "Boston, MA 02115"),
    ("St. Brendan Hospital", "stbrendan.org", "Chicago, IL 60612"),
    ("Lakeview Community Hospital", "lakeviewch.org", "Madison, WI 53703"),
    ("Mercy Valley Health", "mercyvalley.org", "Fresno, CA 93721"),
    ("Northgate Clinic Partners", "northgateclinic.com", "Columbus, OH 43215"),
]
NEUTRAL_DEPTS = ["Facilities Management", "Supply Chain", "Accounts Payable", "IT Service Desk",
                 "Human Resources", "Finance", "Compliance Office", "Marketing & Communications",
                 "Volunteer Services", "Environmental Services", "Clinical Engineering", "Procurement"]  # fmt: skip
NEUTRAL_TITLES = ["Accounts Payable Specialist", "Senior Buyer", "IT Analyst", "Project Manager",
                  "Facilities Coordinator", "Payroll Administrator", "Contracts Manager",
                  "Systems Engineer", "Executive Assistant", "Director of Operations"]  # fmt: skip
PHI_DEPTS = ["Patient Access", "Revenue Cycle", "Health Information Management", "Central Scheduling",
             "Care Coordination", "Patient Financial Services", "Referral Office"]  # fmt: skip
PHI_TITLES = ["Registration Supervisor", "Billing Specialist", "Care Coordinator", "Scheduler",
              "RN Case Manager", "Medical Records Clerk", "Referral Coordinator", "Practice Manager"]  # fmt: skip
FREE_DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "aol.com", "icloud.com", "comcast.net"]

DISCLAIMER = (
    "CONFIDENTIALITY NOTICE: This e-mail and any attachments are for the sole use of the intended "
    "recipient(s) and may contain confidential information. If you are not the intended recipient, "
    "please notify the sender and delete all copies."
)

# ---------------------------------------------------------------------------
# People


@dataclass
class Person:
    first: str
    last: str
    locale: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


LOCALES_FOR = {
    "utf8": ["en_US", "en_US", "es_MX", "fr_FR", "de_DE", "pl_PL", "cs_CZ"],
    "latin1": ["es_MX", "fr_FR", "de_DE"],
    "latin2": ["pl_PL", "cs_CZ"],
    "ascii": ["en_US"],
}


def person(charset_group: str = "ascii", need_non_ascii: bool = False) -> Person:
    for _ in range(50):
        loc = pick(LOCALES_FOR[charset_group])
        f = FAKERS[loc]
        p = Person(f.first_name(), f.last_name(), loc)
        if charset_group == "ascii" and not p.name.isascii():
            continue
        if need_non_ascii and p.name.isascii():
            continue
        if " " in p.last or "-" in p.last and chance(0.5):
            continue
        return p
    return p


STAFF_EMAILS: dict[tuple[str, str, str], str] = {}


def staff_email(p: Person, domain: str) -> str:
    key = (p.first, p.last, domain)
    if key not in STAFF_EMAILS:
        STAFF_EMAILS[key] = new_staff_email(p, domain)
    return STAFF_EMAILS[key]


def new_staff_email(p: Person, domain: str) -> str:
    u = ascii_fold(p.first).lower()
    v = ascii_fold(p.last).lower().replace(" ", "").replace("'", "")
    return pick([f"{u}.{v}", f"{u[0]}{v}", f"{u}{v[0]}", f"{u}_{v}"]) + "@" + domain


def patient_email(p: Person) -> str:
    u = ascii_fold(p.first).lower()
    v = ascii_fold(p.last).lower().replace(" ", "").replace("'", "")
    n = str(rng.randint(1, 99)) if chance(0.6) else ""
    return pick([f"{u}.{v}{n}", f"{u[0]}{v}{n}", f"{u}{v}{n}", f"{v}.{u}"]) + "@" + pick(FREE_DOMAINS)


# ---------------------------------------------------------------------------
# Facts: one instance of a detector kind, in the forms the renderers need


@dataclass
class Fact:
    kind: str
    header: str  # column header / label (the context word)
    key: str  # JSON key / XML element name
    value: str  # with MARK / NB
    sentence: str  # prose that carries the value and its context
    short: str  # a subject-line form


STRONG = {"ssn", "mbi", "mrn", "dob", "health_plan_id", "icd10", "credit_card"}
KINDS = ["ssn", "mbi", "npi", "dea", "icd10", "mrn", "dob", "health_plan_id", "credit_card", "phone",
         "email_address", "health_terms"]  # fmt: skip


def phi_rule(kinds: set[str]) -> bool:
    return bool(kinds & STRONG) or ("health_terms" in kinds and bool(kinds & {"phone", "email_address"}))


def make_fact(kind: str, pat: Person, prov: Person) -> Fact:
    n = pat.name
    dr = f"Dr. {prov.last}"
    if kind == "ssn":
        d = ssn_digits()
        style = pick(["dash"] * 6 + ["space", "bare", "bare"])
        raw = {"dash": f"{d[:3]}-{d[3:5]}-{d[5:]}", "space": f"{d[:3]} {d[3:5]} {d[5:]}", "bare": d}[style]
        v = marked(raw)
        header, key = pick([("SSN", "ssn"), ("Social Security Number", "social_security_number"),
                            ("SSN #", "ssn"), ("Patient SSN", "patient_ssn")])  # fmt: skip
        sentence = pick([
            f"SSN: {v}", f"{n}'s SSN is {v}.", f"Social Security Number: {v}",
            f"Please verify the social security number {v} for {n}.", f"SS# {v}",
            f"The guarantor's SSN on the account is {v}.", f"ssn {v} (patient)",
            f"Soc. Sec. #: {v}", f"We have {v} as the SSN on file for {n}; the payer shows a different one.",
        ])  # fmt: skip
        short = pick([f"SSN {v}", f"SS# {v}", f"ssn {v}"])
    elif kind == "mbi":
        raw = mbi()
        if chance(0.4):
            raw = f"{raw[:4]}-{raw[4:7]}-{raw[7:]}"
        v = marked(raw)
        header, key = pick([("MBI", "mbi"), ("Medicare ID", "medicare_id"),
                            ("Medicare Beneficiary Identifier", "medicare_beneficiary_id")])  # fmt: skip
        sentence = pick([
            f"MBI: {v}", f"Medicare MBI {v}", f"Her new Medicare number (MBI) is {v}.",
            f"Medicare Beneficiary Identifier: {v}", f"Medicare ID {v} - please update the coverage screen.",
            f"{n} brought the new Medicare card; MBI {v}.",
        ])  # fmt: skip
        short = pick([f"MBI {v}", f"Medicare ID {v}"])
    elif kind == "npi":
        v = marked(npi())
        header, key = pick([("NPI", "npi"), ("Provider NPI", "provider_npi"), ("Rendering NPI", "rendering_npi")])
        sentence = pick([
            f"{dr}'s NPI is {v}.", f"Rendering provider: {prov.name}, MD (NPI {v})", f"NPI: {v}",
            f"Billing NPI {v}", f"National Provider Identifier {v} ({dr})",
            f"Please use NPI# {v} for {dr} on the claim form.",
        ])  # fmt: skip
        short = pick([f"NPI {v}", f"{dr} NPI {v}"])
    elif kind == "dea":
        v = marked(dea(prov.last))
        header, key = pick([("DEA", "dea"), ("DEA Number", "dea_number"), ("DEA Registration", "dea_registration")])
        sentence = pick([
            f"DEA: {v}", f"{dr}'s DEA registration is {v} (exp. 2027).", f"DEA # {v}",
            f"Please update the DEA number {v} for {prov.name} in the credentialing file.",
            f"{prov.name}, DO - DEA {v}",
        ])  # fmt: skip
        short = pick([f"DEA {v}", f"DEA # {v}"])
    elif kind == "icd10":
        raw = pick(ICD10)
        v = marked(raw)
        header, key = pick([("Dx Code", "dx_code"), ("ICD-10", "icd10"), ("Diagnosis Code", "diagnosis_code"),
                            ("Primary Dx", "primary_dx")])  # fmt: skip
        sentence = pick([
            f"Dx: {v}", f"ICD-10 {v}", f"The claim lists diagnosis code {v}.", f"primary dx {v}",
            f"ICD10 code: {v}", f"Diagnosis code on the referral is {v}.",
            f"Please change the dx code to {v} and resubmit.",
        ])  # fmt: skip
        short = pick([f"Dx {v}", f"ICD-10 {v}", f"dx code {v}"])
    elif kind == "mrn":
        raw = pick([
            lambda: f"{rng.randint(0, 99999999):08d}", lambda: str(rng.randint(100000, 9999999)),
            lambda: pick("ABEMK") + f"{rng.randint(0, 9999999):07d}", lambda: not_npi_10(),
            lambda: "MR" + f"{rng.randint(0, 999999):06d}",
        ])()  # fmt: skip
        v = marked(raw)
        header, key = pick([("MRN", "mrn"), ("Medical Record Number", "medical_record_number"),
                            ("MR#", "mr_number"), ("Chart #", "chart_number")])  # fmt: skip
        sentence = pick([
            f"MRN: {v}", f"{n} (MRN {v})", f"MR# {v}", f"Medical Record Number: {v}", f"Chart # {v}",
            f"chart number {v}", f"Med Rec #{v}", f"medical record no. {v}",
            f"Can you pull the chart for MRN {v}?",
        ])  # fmt: skip
        short = pick([f"MRN {v}", f"MR# {v}", f"Chart #{v}"])
    elif kind == "dob":
        v = marked(fmt_date(dob_date()))
        header, key = pick([("DOB", "dob"), ("Date of Birth", "date_of_birth"), ("Birth Date", "birthDate"),
                            ("Patient DOB", "patient_dob")])  # fmt: skip
        sentence = pick([
            f"DOB: {v}", f"{n}, DOB {v}", f"Date of birth: {v}", f"{n} was born on {v}.", f"D.O.B. {v}",
            f"Birthdate {v}", f"The date of birth on the card is {v}.", f"{n} (born {v})",
        ])  # fmt: skip
        short = pick([f"DOB {v}", f"D.O.B. {v}"])
    elif kind == "health_plan_id":
        raw = pick([
            lambda: "".join(pick("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(3)) + digits(9),
            lambda: "W" + digits(9), lambda: "U" + digits(10), lambda: digits(11),
            lambda: "MCD" + digits(8), lambda: "H" + digits(8) + "01",
        ])()  # fmt: skip
        v = marked(raw)
        header, key = pick([("Member ID", "member_id"), ("Subscriber ID", "subscriber_id"),
                            ("Policy Number", "policy_number"), ("Insurance ID", "insurance_id"),
                            ("Medicaid ID", "medicaid_id")])  # fmt: skip
        sentence = pick([
            f"Member ID: {v}", f"Subscriber ID {v}", f"Policy # {v}", f"Insurance ID: {v}",
            f"Her Medicaid ID is {v}.", f"member id {v} (primary coverage)",
            f"The plan shows member number {v} as inactive.",
        ])  # fmt: skip
        short = pick([f"Member ID {v}", f"Subscriber ID {v}", f"Policy # {v}"])
    elif kind == "credit_card":
        v = marked(credit_card())
        header, key = pick([("Card Number", "card_number"), ("Credit Card", "credit_card"), ("Payment Card", "card")])
        sentence = pick([
            f"Card number: {v}", f"Please charge the balance to {v}, exp 09/28.", f"Visa {v}",
            f"{n} paid by card {v}.", f"CC: {v}", f"Card on file {v} was declined.",
            f"payment with {v} for the copay",
        ])  # fmt: skip
        short = pick([f"card {v}", f"payment {v}", f"CC {v}"])
    elif kind == "phone":
        style = pick(["paren", "dash", "dot", "intl", "one", "space", "parennospace", "bare"])
        v = marked(phone(style))
        header, key = pick([("Phone", "phone"), ("Cell", "cell_phone"), ("Home Phone", "home_phone")])
        if style == "bare":
            sentence = pick([f"Phone: {v}", f"Cell: {v}", f"Tel {v}", f"phone number {v}"])
        else:
            sentence = pick([
                f"Phone: {v}", f"{n} asked for a call back at {v}.", f"cell {v}", f"Best number is {v}.",
                f"home phone {v}", f"Tel. {v}", f"You can reach {pat.first} at {v}.",
            ])  # fmt: skip
        short = pick([f"call back {v}", f"cb {v}", f"ph {v}"])
    elif kind == "email_address":
        v = patient_email(pat)
        header, key = pick([("Email", "email"), ("E-mail", "email"), ("Email Address", "email_address")])
        sentence = pick([
            f"Email: {v}", f"{pat.first}'s email is {v}.", f"Please send the statement to {v}.",
            f"e-mail: {v}", f"{n} <{v}>",
        ])  # fmt: skip
        short = pick([f"email {v}", f"reply to {v}"])
    elif kind == "health_terms":
        which = pick(["dx", "med", "proc"])
        if which == "dx":
            t = pick(DIAGNOSES)
            header, key = "Diagnosis", "diagnosis"
            sentence = pick([
                f"{n} was diagnosed with {t} last year.", f"History of {t}.",
                f"{pat.first} is being followed for {t}.", f"Assessment: {t}, stable.",
            ])  # fmt: skip
            short = f"{t} follow-up"
        elif which == "med":
            t = pick(MEDICATIONS)
            header, key = "Medication", "medication"
            sentence = pick([
                f"{pat.first} is currently taking {t}.", f"Refill request: {t}.",
                f"Started on {t} at the last visit.", f"Please confirm the {t} dose with the pharmacy.",
            ])  # fmt: skip
            short = f"{t} refill"
        else:
            t = pick(PROCEDURES)
            header, key = "Procedure", "procedure"
            sentence = pick([
                f"{n} is scheduled for a {t} next week.", f"Authorization needed for {t}.",
                f"{pat.first} completed the {t} on Tuesday.", f"Procedure: {t}",
            ])  # fmt: skip
            short = f"{t} scheduling"
        v = t
    else:
        raise ValueError(kind)
    return Fact(kind, header, key, v, sentence, short)


# ---------------------------------------------------------------------------
# Hard negatives: numbers and codes that look like identifiers but are not


def hn_invalid_ssn() -> str:
    a, g, s = f"{rng.randint(1, 899):03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"
    which = pick(["000", "666", "9xx", "g00", "s0000"])
    if which == "000":
        a = "000"
    elif which == "666":
        a = "666"
    elif which == "9xx":
        a = str(rng.randint(900, 999))
    elif which == "g00":
        g = "00"
    else:
        s = "0000"
    return f"{a}-{g}-{s}"


def hn_icd_part() -> str:
    if chance(0.25):
        return pick([c for c in ICD10 if "." in c])
    s = pick("ABCDEFGHJKLMNPRSTVWX") + digits(2) + "." + digits(1)
    if chance(0.5):
        s += pick(["A", "B", "C", "X", "0", "1", "5", "9B", "2T"])
    return s


def hn_tracking() -> str:
    k = pick(["ups", "fedex", "usps"])
    if k == "ups":
        return "1Z" + "".join(pick("0123456789ABCDEFGHJKRVWXY") for _ in range(6)) + digits(10)
    if k == "fedex":
        n = digits(12)
        return f"{n[:4]} {n[4:8]} {n[8:]}"
    n = "9400" + digits(18)
    while luhn_valid(n):
        n = "9400" + digits(18)
    return " ".join(n[i : i + 4] for i in range(0, 22, 4))


def amazon_order() -> str:
    while True:
        s = f"{rng.randint(100, 999)}-{digits(7)}-{digits(7)}"
        if not luhn_valid(s.replace("-", "")):
            return s


def hn_number() -> tuple[str, str]:
    """(context, number) pairs that must not be mistaken for identifiers."""
    k = pick(["inv10", "inv10", "po9", "po10", "order", "track", "ssnshape", "card16", "sku", "dea", "acct",
              "meeting", "conf", "ticket", "asset", "wo"])  # fmt: skip
    if k == "inv10":
        return pick(["Invoice #", "Invoice No.", "Invoice", "Inv#"]), not_npi_10()
    if k == "po9":
        return pick(["PO", "PO #", "Purchase order", "Requisition"]), str(rng.randint(100000000, 999999999))
    if k == "po10":
        return pick(["PO", "Purchase order", "SAP PO"]), not_npi_10("45" if chance(0.5) else None)
    if k == "order":
        return pick(["Order #", "Order", "Sales order"]), pick([amazon_order(), "SO-" + digits(7), not_npi_10()])
    if k == "track":
        return pick(["Tracking", "Tracking #", "Tracking number"]), hn_tracking()
    if k == "ssnshape":
        return pick(["Lot", "Ref", "Case", "Work order", "Batch", "Contract"]), hn_invalid_ssn()
    if k == "card16":
        return pick(["Confirmation", "Reference", "Transaction ID", "Auth code"]), luhn_failing_16()
    if k == "sku":
        return pick(["Part", "SKU", "Model", "Item", "Cat. No.", "Part no."]), hn_icd_part()
    if k == "dea":
        p = pick(["SR", "CS", "RF", "TK", "AP"])
        return pick(["Service request", "Case", "Ticket"]), dea_shaped_invalid(p)
    if k == "acct":
        return pick(["GL account", "Account", "Cost center"]), f"{rng.randint(1000, 9999)}-{rng.randint(100, 999)}-{digits(2)}"
    if k == "meeting":
        n = digits(10)
        return "Meeting ID", f"{n[:3]} {n[3:7]} {n[7:]}"
    if k == "conf":
        return "Confirmation", f"{digits(4)}-{digits(4)}-{digits(2)}"
    if k == "ticket":
        return pick(["Ticket", "Incident"]), "INC" + digits(7)
    if k == "asset":
        return "Asset tag", pick(["A", "BME-", "IT"]) + digits(6)
    return "Work order", "WO-" + digits(6)


def hn_sentence() -> str:
    ctx, num = hn_number()
    num = marked(num)
    d = fmt_date(business_date())
    return pick([
        f"{ctx} {num} is attached for your records.", f"Please reference {ctx.lower()} {num} on all correspondence.",
        f"{ctx}: {num}", f"{ctx} {num} was closed on {d}.", f"We still have {ctx.lower()} {num} open as of {d}.",
        f"Re {ctx} {num} - the balance of ${rng.randint(100, 99999):,}.{rng.randint(0, 99):02d} is due {d}.",
    ])  # fmt: skip


def hn_misc() -> str:
    d = business_date()
    return pick([
        f"The meeting moved to {fmt_date(d)} at {rng.randint(8, 16)}:{pick(['00', '30'])} in Room {rng.randint(1, 6)}-{rng.randint(100, 450)}.",
        f"Version {rng.randint(1, 12)}.{rng.randint(0, 9)}.{rng.randint(0, 40)} goes live on {fmt_date(d)}.",
        f"Deliveries go to the loading dock at {fake.street_address()}, {fake.city()}, {fake.state_abbr()} {fake.zipcode_plus4()}.",
        f"Invoice date {fmt_date(d)}, net 30, total ${rng.randint(100, 250000):,}.{rng.randint(0, 99):02d}.",
        f"Badge access for Suite {rng.randint(100, 900)} ends {fmt_date(d)}.",
        f"The {fmt_date(d, 'long')} deadline for budget submissions still stands.",
        f"Quote valid until {fmt_date(d)}; unit price ${rng.randint(2, 900)}.{rng.randint(0, 99):02d}, qty {rng.randint(1, 500)}.",
    ])  # fmt: skip


# ---------------------------------------------------------------------------
# Documents: logical content before encoding


@dataclass
class Table:
    headers: list[str]
    keys: list[str]
    rows: list[list[str]]
    title: str = ""


@dataclass
class Attachment:
    kind: str  # txt csv json xml ics rfc822 pdf-flate pdf-plain docx xlsx pptx
    filename: str
    blocks: list = field(default_factory=list)  # ("p", str) / ("lines", [str]) / ("table", Table)
    table: Table | None = None
    ics: dict | None = None
    inner: "Doc | None" = None
    charset: str = "utf-8"


@dataclass
class Doc:
    sender: Person
    sender_email: str
    to: Person
    to_email: str
    subject: str
    blocks: list
    attachments: list[Attachment] = field(default_factory=list)
    kinds: set[str] = field(default_factory=set)
    note: str = ""
    where: list[str] = field(default_factory=list)
    date: datetime | None = None


def block_texts(blocks) -> list[str]:
    out = []
    for b in blocks:
        if b[0] == "p":
            out.append(b[1])
        elif b[0] == "lines":
            out.extend(b[1])
        elif b[0] == "table":
            t = b[1]
            out.append(t.title)
            out.extend(t.headers)
            for r in t.rows:
                out.extend(r)
    return out


def doc_texts(d: Doc) -> list[str]:
    out = [d.subject, d.sender.name, d.to.name] + block_texts(d.blocks)
    for a in d.attachments:
        out += block_texts(a.blocks)
        if a.table:
            out += block_texts([("table", a.table)])
        if a.ics:
            out += [a.ics["summary"], a.ics["location"], a.ics["organizer_email"], a.ics["attendee_email"]]
            out += a.ics["description"]
        if a.inner:
            out += doc_texts(a.inner)
    return [clean(t) for t in out]


def signature(org, p: Person, phi_side: bool, contact: str) -> tuple[list[str], set[str]]:
    """Signature lines; contact in none/phone/email/both."""
    name, domain, city = org
    kinds = set()
    lines = ["--" if chance(0.3) else "", p.name]
    lines.append(pick(PHI_TITLES if phi_side else NEUTRAL_TITLES))
    lines.append(pick(PHI_DEPTS if phi_side else NEUTRAL_DEPTS) + " | " + name)
    if chance(0.5):
        lines.append(f"{fake.building_number()} {fake.street_name()} {fake.street_suffix()}, {city}")
    if contact in ("phone", "both"):
        lab = pick(["O:", "Office:", "Tel", "Phone:", "P:", "Direct:", "t."])
        ph = marked(phone(pick(["paren", "dash", "dot", "intl", "one"])))
        extra = ""
        if chance(0.4):
            extra = pick([f" | F: {marked(phone('paren'))}", f" | Cell {marked(phone('dash'))}", f" x{rng.randint(1000, 9999)}"])
        lines.append(f"{lab} {ph}{extra}")
        kinds.add("phone")
    if contact in ("email", "both"):
        lines.append(pick(["", "E: ", "Email: "]) + staff_email(p, domain))
        kinds.add("email_address")
    if chance(0.25):
        lines.append("")
        lines.append(DISCLAIMER)
    return [line for line in lines if line is not None], kinds


# ---------------------------------------------------------------------------
# Encodings and where payload goes

SUBJECT_ENCODINGS = ["subject-b-utf8", "subject-q-utf8", "subject-b-latin1", "subject-q-latin1"]
BODY_ENCODINGS = ["plain", "html", "qp-soft-break", "base64", "charset-iso-8859-1", "charset-iso-8859-15",
                  "charset-iso-8859-2", "charset-windows-1252", "charset-windows-1250"]  # fmt: skip
ATT_ENCODINGS = ["att-text", "att-csv", "att-json", "att-xml", "att-ics", "att-rfc822", "att-pdf-flate",
                 "att-pdf-plain", "att-docx", "att-xlsx", "att-pptx"]  # fmt: skip
ENCODINGS = SUBJECT_ENCODINGS + BODY_ENCODINGS + ATT_ENCODINGS


def charset_group(enc: str) -> str:
    if enc in ("subject-b-latin1", "subject-q-latin1", "charset-iso-8859-1", "charset-iso-8859-15",
               "charset-windows-1252"):  # fmt: skip
        return "latin1"
    if enc in ("charset-iso-8859-2", "charset-windows-1250"):
        return "latin2"
    if enc in ("subject-b-utf8", "subject-q-utf8", "qp-soft-break", "base64", "html", "plain"):
        return "utf8"
    return "ascii"


NON_ASCII_WORDS = {
    "utf8": ["—", "–", "“Rückruf”", "Überweisung", "Résumé", "café", "Año nuevo", "Zürich", "naïve", "→"],
    "latin1": ["Rückruf", "Überweisung", "Résumé", "Café", "Información", "Señal", "Größe", "Crème"],
    "latin2": ["Dziękuję", "Pozdrawiam", "Děkuji", "Zpráva", "Łódź", "Środa"],
}

PHI_SUBJECTS = ["Registration update", "Claim follow-up", "Records request", "Patient callback",
                "Please review", "Prior auth request", "Coverage question", "Billing question",
                "Appointment change", "Chart correction", "Insurance update", "Referral paperwork"]  # fmt: skip
NEUTRAL_PROVIDER_SUBJECTS = ["Provider directory update", "Credentialing file", "New locum provider",
                             "Contact details", "Payer enrollment"]  # fmt: skip

PHI_INTROS = [
    "Hi {to}, please update the registration for {pat} before Monday's appointment.",
    "Forwarding the information you asked for about {pat}.",
    "{to}, the claim for {pat} came back from the payer; details below.",
    "Can you confirm the following for {pat}? We need it for the prior authorization.",
    "Records request for {pat} - see below.",
    "Quick note on {pat}, seen in the office this morning.",
    "Hello {to}, {pat}'s daughter called the front desk today with updates.",
    "Good morning, I am working the denial queue and need help with {pat}'s account.",
]
NEUTRAL_INTROS = [
    "Hi {to}, please add {prov} to the provider directory.",
    "Updating the credentialing file for {prov}.",
    "Contact details for the new locum, {prov}, are below.",
    "{to}, here is the information for the payer enrollment of {prov}.",
]
CONTACT_INTROS = [
    "Hi {to}, {pat} stopped by the front desk and left new contact details.",
    "Updated contact information for {pat} below.",
]
CLOSINGS = ["Thanks,", "Thank you,", "Best regards,", "Regards,", "Thanks so much,", "Best,"]


CHARSET_FLOURISH = {
    "charset-iso-8859-1": ["Danke für Ihre Geduld.", "Gracias por su ayuda, ¡saludos!", "Merci et à bientôt.",
                           "Café in the lobby is open until 3."],
    "charset-iso-8859-15": ["The parking fee is €12.50 per day.", "Budget: €4.500 par site ; merci beaucoup.",
                            "Frais de dossier : 35 € (œuvre collective)."],
    "charset-windows-1252": ["Thanks for your help — it’s appreciated.", "We’ll send the “final” copy Friday.",
                             "Total €1,240 – see you then…"],
    "charset-iso-8859-2": ["Dziękuję za pomoc.", "Děkuji a přeji hezký den.", "Pozdrawiam serdecznie z Łodzi."],
    "charset-windows-1250": ["Dziękuję — pozdrawiam.", "Děkuji, „hotovo“.", "Wszystko gotowe – dziękuję!"],
}  # fmt: skip


def add_flourish(enc: str, doc: "Doc") -> None:
    """Charset encodings carry text only that charset can write."""
    if enc in CHARSET_FLOURISH:
        doc.blocks.insert(len(doc.blocks) - 1, ("p", pick(CHARSET_FLOURISH[enc])))


def positive_doc(enc: str, kinds: list[str], idx: int) -> Doc:
    grp = charset_group(enc)
    org = pick(ORGS)
    pat = person(grp if grp != "ascii" else pick(["ascii", "utf8"]) if enc.startswith("att-") else "ascii",
                 need_non_ascii=enc in SUBJECT_ENCODINGS or enc.startswith("charset-"))  # fmt: skip
    if enc in ("att-pdf-flate", "att-pdf-plain"):
        pat = person(pick(["ascii", "latin1"]))
    prov = person("ascii")
    sender = person("ascii")
    to = person("ascii")
    facts = [make_fact(k, pat, prov) for k in kinds]
    kset = set(kinds)
    strong = bool(kset & STRONG)
    patient_side = strong or "health_terms" in kset or bool(kset & {"phone", "email_address"})
    doc = Doc(sender, staff_email(sender, org[1]), to, staff_email(to, org[1]), "", [], kinds=kset)
    fmt = {"to": to.first, "pat": pat.name, "prov": f"Dr. {prov.name}"}
    if strong or "health_terms" in kset:
        intro = pick(PHI_INTROS).format(**fmt)
    elif kset & {"phone", "email_address"} and not kset & {"npi", "dea"}:
        intro = pick(CONTACT_INTROS).format(**fmt)
    else:
        intro = pick(NEUTRAL_INTROS).format(**fmt)
    contact = pick(["none", "phone", "email", "both"])
    sig, skinds = signature(org, sender, patient_side, contact)
    doc.kinds |= skinds
    closing = pick(CLOSINGS)

    def fact_blocks(fs: list[Fact]) -> list:
        if chance(0.45):
            lines = [f"Patient: {pat.name}"] if patient_side and chance(0.7) else []
            for f in fs:
                if f.kind == "health_terms":
                    lines.append(f"{f.header}: {f.value}")
                else:
                    lines.append(pick([f"{f.header}: {f.value}", f.sentence]))
            return [("lines", lines)]
        return [("p", " ".join(f.sentence for f in fs))]

    noise = [("p", hn_sentence())] if chance(0.35) else []
    subject_base = pick(PHI_SUBJECTS if patient_side else NEUTRAL_PROVIDER_SUBJECTS)

    if enc in SUBJECT_ENCODINGS:
        doc.where = ["subject"]
        word = pick(NON_ASCII_WORDS[grp])
        shorts = " / ".join(f.short for f in facts)
        doc.subject = pick([
            f"{pat.name} {word} {shorts}", f"{subject_base}: {pat.name}, {shorts}", f"{word} {shorts} ({pat.name})",
            f"RE: {shorts} - {pat.name} {word}",
        ])  # fmt: skip
        doc.blocks = [("p", pick(["See subject.", "Please handle, details in the subject line.",
                                  "As discussed on the phone - see subject.", "Can you take care of this today?"])),
                      ("lines", [closing] + sig)]  # fmt: skip
        doc.note = "positive; identifiers in the encoded Subject only"
    elif enc in BODY_ENCODINGS:
        doc.where = ["body"]
        doc.subject = subject_base
        if chance(0.15):
            # Also one fact in the (plain) subject.
            f = pick(facts)
            doc.subject = f"{subject_base} - {f.short}"
            doc.where = ["subject", "body"]
        blocks = [("p", f"{pick(['Hi', 'Hello', 'Good morning'])} {to.first},")] if chance(0.5) else []
        blocks.append(("p", intro))
        blocks += fact_blocks(facts)
        blocks += noise
        blocks.append(("lines", [closing] + sig))
        doc.blocks = blocks
        add_flourish(enc, doc)
        doc.note = "positive; identifiers in the body"
    else:
        doc.where = ["attachment"]
        doc.subject = subject_base
        att = build_attachment(enc, facts, pat, prov, org, sender, noise, idx)
        doc.attachments.append(att)
        if enc == "att-ics":
            doc.kinds.add("email_address")
        if enc == "att-rfc822":
            doc.kinds |= att.inner.kinds
        doc.blocks = [
            ("p", pick(["Please see the attached.", "Attached as requested.", "See attachment.",
                        f"{to.first}, the file you asked for is attached.", "Forwarding for your review."])),
            ("lines", [closing] + sig),
        ]  # fmt: skip
        doc.note = f"positive; identifiers in the {att.kind} attachment only"
    return doc


def extra_rows(facts: list[Fact], prov: Person, n: int) -> list[tuple[Person, list[Fact]]]:
    out = []
    for _ in range(n):
        p = person("ascii")
        out.append((p, [make_fact(f.kind, p, prov) for f in facts]))
    return out


def build_attachment(enc, facts, pat, prov, org, sender, noise, idx) -> Attachment:
    kinds = [f.kind for f in facts]
    title = pick(["Referral Summary", "Registration Worksheet", "Claim Correction", "Patient Account Review",
                  "Prior Authorization Request", "Visit Summary", "Records Release"])  # fmt: skip
    if enc in ("att-csv", "att-xlsx", "att-json", "att-xml"):
        rows = [(pat, facts)] + extra_rows(facts, prov, rng.randint(0, 2))
        headers = ["Patient Name"] + [f.header for f in facts]
        keys = ["patient_name"] + [f.key for f in facts]
        data = []
        for p, fs in rows:
            vals = [p.name] + [f.value for f in fs]
            data.append(vals)
        if chance(0.4):
            headers.append("Visit Date")
            keys.append("visit_date")
            for r in data:
                r.append(fmt_date(business_date(), "iso" if enc == "att-json" else None))
        t = Table(headers, keys, data, title)
        fname = {"att-csv": "export.csv", "att-xlsx": "worklist.xlsx", "att-json": "patient.json",
                 "att-xml": "record.xml"}[enc]  # fmt: skip
        fname = pick(["", "2025_", "q3_"]) + fname
        return Attachment(enc[4:], fname, table=t)
    if enc == "att-ics":
        when = business_date()
        desc = [f"Patient: {pat.name}"]
        for f in facts:
            desc.append(f"{f.header}: {f.value}" if f.kind != "health_terms" else f.sentence)
        em = staff_email(sender, org[1])
        desc.append(f"Questions: {em}")
        return Attachment("ics", "appointment.ics", ics={
            "summary": pick(["Appointment", "New patient visit", "Follow-up visit"]) + f": {pat.name}",
            "location": f"{org[0]}, Suite {rng.randint(100, 600)}", "description": desc,
            "start": when, "organizer_email": em, "organizer": sender.name,
            "attendee_email": staff_email(person("ascii"), org[1]),
        })  # fmt: skip
    if enc == "att-rfc822":
        inner = positive_doc("plain", kinds, idx)
        # The inner message always carries an email address in its body, so
        # the label does not depend on whether its address headers are read.
        if "email_address" not in inner.kinds:
            inner.blocks.append(("lines", ["", f"Reply to: {inner.sender_email}"]))
            inner.kinds.add("email_address")
        inner.note = "forwarded message"
        return Attachment("rfc822", "forwarded.eml", inner=inner)
    # Document-like: txt, pdf, docx, pptx
    blocks = [("p", title), ("p", f"Prepared by {sender.name}, {org[0]}")]
    lines = [f"Patient: {pat.name}"]
    for f in facts:
        lines.append(pick([f"{f.header}: {f.value}", f.sentence]) if f.kind != "health_terms" else f.sentence)
    if enc == "att-docx" and chance(0.4):
        blocks.append(("table", Table(["Field", "Value"], ["field", "value"],
                                      [["Patient", pat.name]] + [[f.header, f.value] for f in facts])))  # fmt: skip
    else:
        blocks.append(("lines", lines))
    blocks += noise
    fname = {"att-text": "notes.txt", "att-pdf-flate": "summary.pdf", "att-pdf-plain": "form.pdf",
             "att-docx": "letter.docx", "att-pptx": "case_review.pptx"}[enc]  # fmt: skip
    charset = pick(["utf-8", "utf-8", "windows-1252"]) if enc == "att-text" else "utf-8"
    if charset == "windows-1252":
        for b in blocks:
            for t in block_texts([b]):
                try:
                    clean(t).encode("cp1252")
                except UnicodeEncodeError:
                    charset = "utf-8"
    return Attachment(enc[4:], fname, blocks=blocks, charset=charset)


# ---------------------------------------------------------------------------
# Benign mail: hospital business, full of hard negatives


def benign_doc(enc: str, idx: int, no_newsletter: bool = False) -> Doc:
    grp = charset_group(enc)
    org = pick(ORGS)
    sender = person("ascii" if grp == "ascii" else grp if chance(0.5) else "ascii")
    to = person("ascii")
    scenario = pick(["invoice", "invoice", "shipping", "it", "facilities", "meeting", "meeting", "finance",
                     "hr", "newsletter", "newsletter", "procurement", "note"])  # fmt: skip
    if enc == "att-ics":
        scenario = "meeting"
    if (enc == "att-rfc822" or no_newsletter) and scenario == "newsletter":
        scenario = "invoice"
    doc = Doc(sender, staff_email(sender, org[1]), to, staff_email(to, org[1]), "", [])
    kinds: set[str] = set()
    para_kinds: set[str] = set()
    table_kinds: set[str] = set()
    contact = "none" if scenario in ("newsletter", "note") else pick(["none", "phone", "email", "both", "both"])
    sig, skinds = signature(org, sender, False, contact)
    if scenario == "newsletter":
        sig = ["", pick(["Marketing & Communications", "Employee Wellness Committee", "The Wellness Team"]), org[0]]
    kinds |= skinds
    vendor = fake.company()
    d1, d2 = business_date(), business_date()
    paras: list = []
    table: Table | None = None
    title = ""
    if scenario == "invoice":
        ctx, inv = pick([("Invoice", not_npi_10()), ("Invoice", "INV-2025-" + digits(6)), ("Invoice", digits(9))])
        po = not_npi_10("45") if chance(0.5) else str(rng.randint(100000000, 999999999))
        subject = f"Invoice {inv} - PO {po}"
        title = f"{vendor} - Invoice"
        paras = [
            ("p", f"Please find invoice {marked(inv)} dated {fmt_date(d1)} for purchase order {marked(po)}. "
                  f"Payment terms are net 30; the amount due is ${rng.randint(200, 90000):,}.{rng.randint(0, 99):02d} by {fmt_date(d2)}."),
            ("p", hn_sentence()),
        ]  # fmt: skip
        table = Table(["Line", "SKU", "Description", "Qty", "Unit Price"], ["line", "sku", "description", "qty", "unit_price"],
                      [[str(i + 1), marked(hn_icd_part()), pick(["Nitrile gloves, box of 100", "Copy paper, case",
                        "IV pole, 4-leg", "Label printer ribbon", "Wheelchair cushion", "Toner cartridge",
                        "Bed rail pad", "Disinfectant wipes"]), str(rng.randint(1, 200)),
                        f"{rng.randint(1, 400)}.{rng.randint(0, 99):02d}"] for i in range(rng.randint(2, 4))])  # fmt: skip
    elif scenario == "shipping":
        tr = hn_tracking()
        subject = f"Your order has shipped - tracking {tr}"
        title = "Shipment notification"
        paras = [
            ("p", f"Order {marked(pick([not_npi_10(), 'SO-' + digits(7), amazon_order()]))} "
                  f"shipped on {fmt_date(d1)} via {pick(['UPS', 'FedEx', 'USPS'])}, tracking {marked(tr)}. "
                  f"Estimated delivery {fmt_date(d2)} to {fake.street_address()}, {fake.city()}, {fake.state_abbr()} {fake.zipcode()}."),
            ("p", hn_sentence()),
        ]  # fmt: skip
        table = Table(["Item", "Part no.", "Qty", "Tracking"], ["item", "part_no", "qty", "tracking"],
                      [[pick(["Monitor arm", "Barcode scanner", "Docking station", "Keyboard tray"]),
                        marked(hn_icd_part()), str(rng.randint(1, 20)), marked(hn_tracking())] for _ in range(2)])  # fmt: skip
    elif scenario == "it":
        inc = "INC" + digits(7)
        subject = f"{inc}: workstation upgrade in Room {rng.randint(1, 5)}-{rng.randint(100, 400)}"
        title = "Change notice"
        paras = [
            ("p", f"Ticket {marked(inc)} is scheduled for {fmt_date(d1)}. The {pick(['Citrix', 'VPN', 'badge reader', 'print server'])} "
                  f"client moves from version {rng.randint(3, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 30)} to "
                  f"{rng.randint(10, 12)}.{rng.randint(0, 9)}.{rng.randint(0, 30)}; asset tag {marked('IT' + digits(6))} will be reimaged."),
            ("p", f"Service request {marked(dea_shaped_invalid(pick(['SR', 'CS'])))} covers the replacement printers (model {marked(hn_icd_part())})."),
        ]  # fmt: skip
        table = Table(["Asset", "Model", "Location", "Window"], ["asset", "model", "location", "window"],
                      [["IT" + digits(6), marked(hn_icd_part()), f"Room {rng.randint(1, 5)}-{rng.randint(100, 400)}",
                        fmt_date(business_date())] for _ in range(3)])  # fmt: skip
    elif scenario == "facilities":
        wo = "WO-" + digits(6)
        subject = f"Work order {wo} - elevator B inspection"
        title = "Facilities update"
        paras = [
            ("p", f"Work order {marked(wo)}: the contractor replaces part {marked(hn_icd_part())} on {fmt_date(d1)}. "
                  f"Lot {marked(hn_invalid_ssn())} of the ceiling tiles was recalled by the manufacturer."),
            ("p", hn_misc()),
        ]  # fmt: skip
        table = Table(["Lot", "Part", "Building", "Due"], ["lot", "part", "building", "due"],
                      [[marked(hn_invalid_ssn()), marked(hn_icd_part()), pick(["A", "B", "C"]) + str(rng.randint(1, 9)),
                        fmt_date(business_date())] for _ in range(3)])  # fmt: skip
    elif scenario == "meeting":
        subject = pick(["Budget review", "Quarterly operations meeting", "Vendor demo", "Go-live planning",
                        "Capital committee"]) + f" - {fmt_date(d1)}"  # fmt: skip
        title = "Meeting notes"
        mid = digits(10)
        dial = marked(phone(pick(["dash", "intl", "paren"])))
        para_kinds.add("phone")
        paras = [
            ("p", f"We meet on {fmt_date(d1, 'long')} at {rng.randint(8, 15)}:{pick(['00', '30'])} in Conference Room {rng.randint(1, 4)}{pick('ABC')}."),
            ("p", f"Dial-in {dial}, Meeting ID {marked(f'{mid[:3]} {mid[3:7]} {mid[7:]}')}, passcode {digits(6)}."),
            ("p", hn_misc()),
        ]  # fmt: skip
        table = Table(["Topic", "Owner", "Date"], ["topic", "owner", "date"],
                      [[pick(["FY26 capital requests", "Parking garage", "Badge system", "Cafeteria contract"]),
                        person("ascii").name, fmt_date(business_date())] for _ in range(3)])  # fmt: skip
    elif scenario == "finance":
        subject = f"Month-end close - {MONTHS[d1.month - 1]} {d1.year}"
        title = "Journal entries"
        paras = [
            ("p", f"Journal entry {marked(not_npi_10())} posts to GL account {rng.randint(1000, 9999)}-{rng.randint(100, 999)}-{digits(2)} "
                  f"on {fmt_date(d1)}. Reference {marked(luhn_failing_16())} is the bank's confirmation."),
            ("p", hn_sentence()),
        ]  # fmt: skip
        table = Table(["Entry", "Account", "Reference", "Amount"], ["entry", "account", "reference", "amount"],
                      [[marked(not_npi_10()), marked(hn_invalid_ssn()), marked(luhn_failing_16()),
                        f"{rng.randint(100, 99999)}.{rng.randint(0, 99):02d}"] for _ in range(3)])  # fmt: skip
    elif scenario == "hr":
        subject = pick(["Open enrollment reminder", "Annual compliance training", "Payroll calendar update",
                        "Parking permit renewal"])  # fmt: skip
        title = "Employee notice"
        paras = [
            ("p", f"The deadline is {fmt_date(d1)}. Employee ID {marked('E' + digits(7))} examples in the portal use the format "
                  f"shown on your badge; payroll cycle {marked(str(rng.randint(100000000, 999999999)))} closes {fmt_date(d2)}."),
            ("p", hn_misc()),
        ]  # fmt: skip
        table = Table(["Employee ID", "Department", "Deadline"], ["employee_id", "department", "deadline"],
                      [["E" + digits(7), pick(NEUTRAL_DEPTS), fmt_date(business_date())] for _ in range(3)])
    elif scenario == "procurement":
        q = "Q-" + digits(6)
        subject = f"Quote {q} for SKU {hn_icd_part()}"
        title = f"Quotation {q}"
        paras = [
            ("p", f"{vendor} quotes SKU {marked(hn_icd_part())} and item {marked(hn_icd_part())} at ${rng.randint(5, 900)}.{rng.randint(0, 99):02d} each, "
                  f"valid until {fmt_date(d1)}. Our PO {marked(not_npi_10('45'))} covers the first shipment."),
            ("p", hn_sentence()),
        ]  # fmt: skip
        table = Table(["SKU", "Description", "Price"], ["sku", "description", "price"],
                      [[marked(hn_icd_part()), pick(["Sharps container lid", "Exam table paper", "Privacy curtain",
                                                     "Thermometer probe cover"]), f"{rng.randint(3, 300)}.{rng.randint(0, 99):02d}"]
                       for _ in range(3)])  # fmt: skip
    elif scenario == "newsletter":
        t1, t2 = pick(NEWSLETTER_TERMS), pick(NEWSLETTER_TERMS)
        subject = pick(["This week at", "News from", "Staff bulletin:"]) + f" {org[0]}"
        title = "Staff bulletin"
        paras = [
            ("p", f"The annual {t1} clinic for employees runs {fmt_date(d1, 'long')} in Conference Room {rng.randint(1, 4)}{pick('ABC')}, "
                  f"8 am to 4 pm. Bring your badge."),
            ("p", f"Free {t2} information is available at the wellness fair on {fmt_date(d2)} in the main lobby."),
            ("p", hn_misc()),
        ]  # fmt: skip
        para_kinds.add("health_terms")
        table_kinds.add("health_terms")
        table = Table(["Event", "Date", "Location"], ["event", "date", "location"],
                      [[f"{pick(NEWSLETTER_TERMS)} event", fmt_date(business_date()),
                        f"Room {rng.randint(1, 5)}-{rng.randint(100, 400)}"] for _ in range(2)])  # fmt: skip
    else:  # note
        subject = pick(["Quick question", "Lunch order", "Parking", "Copier on 3", "Friday"])
        title = "Note"
        paras = [("p", pick(["Can you send me the slides from Tuesday?", "The copier on the third floor is fixed.",
                             "Lunch is in the usual place at noon.", "I will be out Friday; back Monday."])),
                 ("p", hn_misc())]  # fmt: skip
        if chance(0.5):
            paras.append(("p", hn_sentence()))
    doc.note = f"benign {scenario}"
    closing = pick(CLOSINGS)
    greeting = [("p", f"{pick(['Hi', 'Hello', 'Dear'])} {to.first},")] if scenario != "newsletter" else []

    if enc in SUBJECT_ENCODINGS:
        word = pick(NON_ASCII_WORDS[grp])
        ctx, num = hn_number()
        doc.subject = pick([f"{subject} {word} {ctx} {marked(num)}", f"{word} {ctx} {marked(num)} - {subject}"])
        doc.blocks = greeting + paras + [("lines", [closing] + sig)]
        doc.where = ["subject", "body"]
        kinds |= para_kinds
    elif enc in BODY_ENCODINGS:
        doc.subject = subject
        with_table = table is not None and chance(0.4)
        doc.blocks = greeting + paras + ([("table", table)] if with_table else []) + [("lines", [closing] + sig)]
        doc.where = ["body"]
        kinds |= para_kinds | (table_kinds if with_table else set())
        add_flourish(enc, doc)
    else:
        doc.subject = subject
        doc.where = ["body", "attachment"]
        doc.blocks = greeting + [("p", pick(["Please see the attached.", "Attached for your files.", "FYI - attached."]))] + [
            ("lines", [closing] + sig)
        ]
        att_kind = enc[4:]
        if att_kind in ("csv", "xlsx", "json", "xml"):
            if table is None:
                table = Table(["Item", "Reference", "Date"], ["item", "reference", "date"],
                              [[pick(["Parking", "Badge", "Locker"]), marked(hn_number()[1]), fmt_date(business_date())]
                               for _ in range(3)])  # fmt: skip
            table.title = title
            kinds |= table_kinds
            att = Attachment(att_kind, {"csv": "report.csv", "xlsx": "report.xlsx", "json": "export.json",
                                        "xml": "export.xml"}[att_kind], table=table)  # fmt: skip
        elif att_kind == "ics":
            em = staff_email(sender, org[1])
            dial = marked(phone(pick(["dash", "intl", "paren"])))
            mid = digits(10)
            att = Attachment("ics", "invite.ics", ics={
                "summary": subject, "location": f"Conference Room {rng.randint(1, 4)}{pick('ABC')}",
                "description": [f"Dial-in: {dial}", f"Meeting ID: {mid[:3]} {mid[3:7]} {mid[7:]}",
                                clean(hn_sentence()), f"Agenda questions: {em}"],
                "start": d1, "organizer_email": em, "organizer": sender.name,
                "attendee_email": staff_email(to, org[1]),
            })  # fmt: skip
            kinds |= {"phone", "email_address"}
        elif att_kind == "rfc822":
            inner = benign_doc("plain", idx, no_newsletter=True)
            if "email_address" not in inner.kinds:
                inner.blocks.append(("lines", ["", f"Reply to: {inner.sender_email}"]))
                inner.kinds.add("email_address")
            if "health_terms" in inner.kinds:
                raise AssertionError("newsletters are not forwarded")
            kinds |= inner.kinds
            att = Attachment("rfc822", "forwarded.eml", inner=inner)
        else:
            kinds |= para_kinds | (table_kinds if table else set())
            blocks = [("p", title)] + paras + ([("table", table)] if table and att_kind == "docx" else [])
            if table and att_kind != "docx":
                blocks.append(("lines", [" | ".join(table.headers)] + [" | ".join(r) for r in table.rows]))
            fname = {"text": "notes.txt", "pdf-flate": "invoice.pdf", "pdf-plain": "notice.pdf",
                     "docx": "memo.docx", "pptx": "update.pptx"}[att_kind]  # fmt: skip
            att = Attachment(att_kind, fname, blocks=blocks)
        doc.attachments.append(att)
    doc.kinds = kinds
    return doc


# ---------------------------------------------------------------------------
# Encoders


def fold_text(text: str, width: int = 76) -> list[str]:
    """Wraps a paragraph at spaces, never inside an identifier (NB, MARK)."""
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]


def plain_lines(blocks, wrap: bool = True) -> list[str]:
    out: list[str] = []
    for b in blocks:
        if b[0] == "p":
            out += fold_text(b[1]) if wrap else [b[1]]
            out.append("")
        elif b[0] == "lines":
            for line in b[1]:
                out += fold_text(line) if wrap and len(clean(line)) > 76 else [line]
            out.append("")
        elif b[0] == "table":
            t = b[1]
            if t.title:
                out.append(t.title)
            out.append(" | ".join(t.headers))
            for r in t.rows:
                out.append(" | ".join(r))
            out.append("")
    while out and out[-1] == "":
        out.pop()
    return out


ENTITY = {"é": "&eacute;", "á": "&aacute;", "í": "&iacute;", "ó": "&oacute;", "ú": "&uacute;", "ñ": "&ntilde;",
          "ü": "&uuml;", "ö": "&ouml;", "ä": "&auml;", "è": "&egrave;", "ç": "&ccedil;", "É": "&Eacute;",
          "—": "&mdash;", "–": "&ndash;", "“": "&ldquo;", "”": "&rdquo;", "’": "&rsquo;"}  # fmt: skip
INLINE_TAGS = [
    ("<span>", "</span>"), ("<b>", "</b>"), ("<span style=\"font-size:11.0pt\">", "</span>"),
    ("<font color=\"#1F497D\">", "</font>"), ("<span class=\"x_MsoHyperlink\">", "</span>"), ("<i>", "</i>"),
]


def html_token(tok: str) -> str:
    out = []
    for ch in tok:
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == '"':
            out.append("&quot;")
        elif ch == "-" and MARK in tok and chance(0.3):
            out.append(pick(["&#45;", "&#x2D;", "&#x2d;"]))
        elif ch == "/" and MARK in tok and chance(0.3):
            out.append("&#47;")
        elif ch == "@" and chance(0.2):
            out.append("&#64;")
        elif ord(ch) > 127 and chance(0.6):
            out.append(ENTITY.get(ch, f"&#{ord(ch)};"))
        else:
            out.append(ch)
    s = "".join(out)
    if MARK in s:
        a, b = s.split(MARK, 1)
        b = b.replace(MARK, "")
        o, c = pick(INLINE_TAGS)
        s = pick([f"{o}{a}{c}{b}", f"{a}{o}{b}{c}", f"{o}{a}{c}{o}{b}{c}"])
    return s.replace(NB, pick([" ", " ", " ", "&nbsp;"]) if NB in s else " ")


def html_text(s: str) -> str:
    parts = re.split(r"( +)", s)
    out = []
    for i, p in enumerate(parts):
        if p.startswith(" ") and p.strip() == "":
            prev = parts[i - 1] if i else ""
            out.append("&nbsp;" if prev.endswith(":") and chance(0.4) else p)
        else:
            out.append(html_token(p))
    return "".join(out)


def render_html(blocks) -> str:
    h = ['<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">',
         "<style>p.MsoNormal{margin:0in;font-size:11.0pt;font-family:Calibri,sans-serif}"
         " td{padding:2pt 4pt}</style>",
         "<!--[if gte mso 9]><xml><o:OfficeDocumentSettings><o:AllowPNG/></o:OfficeDocumentSettings></xml><![endif]-->",
         '</head><body lang="EN-US"><div class="WordSection1">']  # fmt: skip
    for b in blocks:
        if b[0] == "p":
            h.append(f'<p class="MsoNormal">{html_text(b[1])}</p>')
        elif b[0] == "lines":
            h.append('<p class="MsoNormal">' + "<br>\n".join(html_text(x) for x in b[1]) + "</p>")
        elif b[0] == "table":
            t = b[1]
            rows = ["<tr>" + "".join(f"<th>{html_text(x)}</th>" for x in t.headers) + "</tr>"]
            rows += ["<tr>" + "".join(f"<td>{html_text(x)}</td>" for x in r) + "</tr>" for r in t.rows]
            h.append('<table border="1" cellspacing="0">' + "\n".join(rows) + "</table>")
    h.append("</div></body></html>")
    return "\n".join(h)


def qp_encode(text: str, charset: str, force_at_marks: bool = True, dash_hex: bool = False) -> bytes:
    """Quoted-printable (RFC 2045), lines <= 76, with soft line breaks at
    every MARK (inside identifiers) and where lines get long."""
    out_lines = []
    for line in text.split("\n"):
        toks: list[str] = []
        for ch in line.replace(NB, " "):
            if ch == MARK:
                toks.append(MARK)
                continue
            for byte in ch.encode(charset):
                c = chr(byte)
                if (33 <= byte <= 126 and c != "=") or c == " ":
                    toks.append("=2D" if (dash_hex and c == "-") else c)
                else:
                    toks.append(f"={byte:02X}")
        # trailing whitespace at a hard line end must be encoded
        while toks and toks[-1] == MARK:
            toks.pop()
        if toks and toks[-1] in (" ", "\t"):
            toks[-1] = f"={ord(toks[-1]):02X}"
        cur = ""
        for t in toks:
            if t == MARK:
                if force_at_marks and cur:
                    out_lines.append(cur + "=")
                    cur = ""
                continue
            if len(cur) + len(t) > 75:
                out_lines.append(cur + "=")
                cur = ""
            cur += t
        out_lines.append(cur)
    return "\r\n".join(out_lines).encode("ascii")


def b64_lines(data: bytes) -> bytes:
    s = base64.b64encode(data).decode()
    return "\r\n".join(s[i : i + 76] for i in range(0, len(s), 76)).encode()


def encoded_words(text: str, charset: str, enc: str, split_at_marks: bool) -> str:
    """RFC 2047 encoded-words for a whole header value; one word per piece
    (pieces end at MARKs when split_at_marks, else by length)."""
    pieces = text.replace(NB, " ").split(MARK) if split_at_marks else [clean(text)]
    words = []
    py_cs = {"utf-8": "utf-8", "iso-8859-1": "latin-1"}[charset]
    for piece in pieces:
        # further split so each encoded-word stays <= 75 characters
        chunk = ""
        chunks = []
        for ch in piece:
            trial = chunk + ch
            if len(ew(trial, charset, py_cs, enc)) > 75:
                chunks.append(chunk)
                chunk = ch
            else:
                chunk = trial
        if chunk:
            chunks.append(chunk)
        words += [ew(c, charset, py_cs, enc) for c in chunks]
    return "\r\n ".join(words)


def ew(s: str, charset: str, py_cs: str, enc: str) -> str:
    data = s.encode(py_cs)
    if enc == "B":
        return f"=?{charset.upper() if chance(0.0) else charset}?B?{base64.b64encode(data).decode()}?="
    out = []
    for byte in data:
        c = chr(byte)
        if c == " ":
            out.append("_")
        elif c.isascii() and (c.isalnum() or c in "!*+-/"):
            out.append(c)
        else:
            out.append(f"={byte:02X}")
    return f"=?{charset}?Q?{''.join(out)}?="


def header_value(text: str) -> str:
    t = clean(text)
    if t.isascii():
        return t
    return encoded_words(text, "utf-8", "Q", False)


def pdf_string(s: str) -> str:
    data = s.encode("cp1252", errors="replace")
    out = []
    for b in data:
        c = chr(b)
        if c in "()\\":
            out.append("\\" + c)
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\{b:03o}")
    return "(" + "".join(out) + ")"


def make_pdf(lines: list[str], compress: bool) -> bytes:
    ops = ["BT", "/F1 10 Tf", "14 TL", "60 740 Td"]
    title = True
    for i, line in enumerate(lines):
        if i and i % 48 == 0:
            pass
        line = line.replace(NB, " ")
        if title:
            ops += ["/F2 13 Tf", pdf_string(clean(line)) + " Tj", "/F1 10 Tf", "T*"]
            title = False
            continue
        if MARK in line:
            parts = line.split(MARK)
            arr = []
            for j, p in enumerate(parts):
                if j:
                    arr.append(str(pick([-12, -8, 6, 10, -20, 15])))
                arr.append(pdf_string(p))
            ops.append("[" + " ".join(arr) + "] TJ T*")
        else:
            ops.append(pdf_string(line) + " Tj T*")
    ops.append("ET")
    content = "\n".join(ops).encode("latin-1")
    if compress:
        stream = zlib.compress(content, 9)
        sdict = f"<< /Length {len(stream)} /Filter /FlateDecode >>"
    else:
        stream = content
        sdict = f"<< /Length {len(stream)} >>"
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R /F2 5 0 R >> >> /Contents 6 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        sdict.encode() + b"\nstream\n" + stream + b"\nendstream",
        b"<< /Producer (Ward corpus generator) /Title (Document) >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n".encode() + o + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R /Info 7 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


ZIP_DATE = (2025, 3, 14, 9, 30, 0)


def make_zip(files: list[tuple[str, str]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, content in files:
            zi = zipfile.ZipInfo(name, ZIP_DATE)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            z.writestr(zi, content.encode("utf-8"))
    return buf.getvalue()


XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
R_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
OD_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def w_runs(text: str) -> str:
    """Runs of a paragraph; the text split across runs at MARKs."""
    pieces = text.replace(NB, " ").split(MARK)
    out = []
    for i, p in enumerate(pieces):
        rpr = "<w:rPr><w:b/></w:rPr>" if i and chance(0.5) else ""
        if i and chance(0.4):
            out.append('<w:proofErr w:type="spellStart"/>')
        out.append(f'<w:r>{rpr}<w:t xml:space="preserve">{xml_escape(p)}</w:t></w:r>')
    return "".join(out)


def make_docx(blocks) -> bytes:
    body = []
    for b in blocks:
        if b[0] == "p":
            body.append(f"<w:p>{w_runs(b[1])}</w:p>")
        elif b[0] == "lines":
            body += [f"<w:p>{w_runs(x)}</w:p>" for x in b[1]]
        elif b[0] == "table":
            t = b[1]
            grid = "".join('<w:gridCol w:w="3000"/>' for _ in t.headers)
            rows = []
            for r in [t.headers] + t.rows:
                cells = "".join(f'<w:tc><w:tcPr><w:tcW w:w="3000" w:type="dxa"/></w:tcPr><w:p>{w_runs(c)}</w:p></w:tc>' for c in r)
                rows.append(f"<w:tr>{cells}</w:tr>")
            body.append(f'<w:tbl><w:tblPr><w:tblW w:w="0" w:type="auto"/></w:tblPr><w:tblGrid>{grid}</w:tblGrid>{"".join(rows)}</w:tbl>')
            body.append("<w:p/>")
    doc = (
        XML_DECL + f'<w:document xmlns:w="{W_NS}" xmlns:r="{R_NS}"><w:body>' + "".join(body)
        + '<w:sectPr><w:pgSz w:w="12240" w:h="15840"/><w:pgMar w:top="1440" w:right="1440" w:bottom="1440" w:left="1440" w:header="720" w:footer="720" w:gutter="0"/></w:sectPr>'
        + "</w:body></w:document>"
    )  # fmt: skip
    ct = (
        XML_DECL + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
        "</Types>"
    )
    rels = (
        XML_DECL + f'<Relationships xmlns="{REL_NS}"><Relationship Id="rId1" '
        f'Type="{OD_REL}/officeDocument" Target="word/document.xml"/></Relationships>'
    )
    return make_zip([("[Content_Types].xml", ct), ("_rels/.rels", rels), ("word/document.xml", doc)])


def col_name(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


def make_xlsx(t: Table) -> bytes:
    sst: list[str] = []
    index: dict[str, int] = {}
    rows_xml = []
    all_rows = ([[t.title]] if t.title and chance(0.5) else []) + [t.headers] + t.rows
    for ri, row in enumerate(all_rows, 1):
        cells = []
        for ci, val in enumerate(row):
            ref = f"{col_name(ci)}{ri}"
            plain = clean(val)
            if ri > 1 and re.fullmatch(r"[1-9]\d{0,14}(\.\d+)?", plain) and chance(0.75):
                cells.append(f'<c r="{ref}"><v>{plain}</v></c>')
                continue
            if MARK in val and chance(0.5):
                a, b = val.replace(NB, " ").split(MARK, 1)
                b = b.replace(MARK, "")
                si = f'<si><r><t xml:space="preserve">{xml_escape(a)}</t></r><r><rPr><b/><sz val="11"/></rPr><t xml:space="preserve">{xml_escape(b)}</t></r></si>'
            elif chance(0.15):
                cells.append(f'<c r="{ref}" t="inlineStr"><is><t>{xml_escape(plain)}</t></is></c>')
                continue
            else:
                si = f'<si><t xml:space="preserve">{xml_escape(plain)}</t></si>'
            if si not in index:
                index[si] = len(sst)
                sst.append(si)
            cells.append(f'<c r="{ref}" t="s"><v>{index[si]}</v></c>')
        rows_xml.append(f'<row r="{ri}">{"".join(cells)}</row>')
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    sheet = XML_DECL + f'<worksheet xmlns="{main}"><sheetData>{"".join(rows_xml)}</sheetData></worksheet>'
    strings = XML_DECL + f'<sst xmlns="{main}" count="{len(sst)}" uniqueCount="{len(sst)}">{"".join(sst)}</sst>'
    wb = (
        XML_DECL + f'<workbook xmlns="{main}" xmlns:r="{R_NS}"><sheets>'
        '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )
    wb_rels = (
        XML_DECL + f'<Relationships xmlns="{REL_NS}">'
        f'<Relationship Id="rId1" Type="{OD_REL}/worksheet" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{OD_REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>'
    )
    ct = (
        XML_DECL + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        '<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
        "</Types>"
    )
    rels = XML_DECL + f'<Relationships xmlns="{REL_NS}"><Relationship Id="rId1" Type="{OD_REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
    return make_zip([("[Content_Types].xml", ct), ("_rels/.rels", rels), ("xl/workbook.xml", wb),
                     ("xl/_rels/workbook.xml.rels", wb_rels), ("xl/worksheets/sheet1.xml", sheet),
                     ("xl/sharedStrings.xml", strings)])  # fmt: skip


A_NS = "http://schemas.openxmlformats.org/drawingml/2006/main"
P_NS = "http://schemas.openxmlformats.org/presentationml/2006/main"
PNS = f'xmlns:a="{A_NS}" xmlns:r="{R_NS}" xmlns:p="{P_NS}"'
SPTREE_HEAD = ('<p:nvGrpSpPr><p:cNvPr id="1" name=""/><p:cNvGrpSpPr/><p:nvPr/></p:nvGrpSpPr>'
               '<p:grpSpPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="0" cy="0"/><a:chOff x="0" y="0"/>'
               '<a:chExt cx="0" cy="0"/></a:xfrm></p:grpSpPr>')  # fmt: skip
THEME = (
    XML_DECL + f'<a:theme xmlns:a="{A_NS}" name="Office Theme"><a:themeElements><a:clrScheme name="Office">'
    '<a:dk1><a:sysClr val="windowText" lastClr="000000"/></a:dk1><a:lt1><a:sysClr val="window" lastClr="FFFFFF"/></a:lt1>'
    '<a:dk2><a:srgbClr val="1F497D"/></a:dk2><a:lt2><a:srgbClr val="EEECE1"/></a:lt2>'
    '<a:accent1><a:srgbClr val="4F81BD"/></a:accent1><a:accent2><a:srgbClr val="C0504D"/></a:accent2>'
    '<a:accent3><a:srgbClr val="9BBB59"/></a:accent3><a:accent4><a:srgbClr val="8064A2"/></a:accent4>'
    '<a:accent5><a:srgbClr val="4BACC6"/></a:accent5><a:accent6><a:srgbClr val="F79646"/></a:accent6>'
    '<a:hlink><a:srgbClr val="0000FF"/></a:hlink><a:folHlink><a:srgbClr val="800080"/></a:folHlink></a:clrScheme>'
    '<a:fontScheme name="Office"><a:majorFont><a:latin typeface="Calibri"/><a:ea typeface=""/><a:cs typeface=""/></a:majorFont>'
    '<a:minorFont><a:latin typeface="Calibri"/><a:ea typeface=""/><a:cs typeface=""/></a:minorFont></a:fontScheme>'
    '<a:fmtScheme name="Office"><a:fillStyleLst>' + '<a:solidFill><a:schemeClr val="phClr"/></a:solidFill>' * 3
    + '</a:fillStyleLst><a:lnStyleLst>' + '<a:ln w="9525"><a:solidFill><a:schemeClr val="phClr"/></a:solidFill></a:ln>' * 3
    + '</a:lnStyleLst><a:effectStyleLst>' + '<a:effectStyle><a:effectLst/></a:effectStyle>' * 3
    + '</a:effectStyleLst><a:bgFillStyleLst>' + '<a:solidFill><a:schemeClr val="phClr"/></a:solidFill>' * 3
    + '</a:bgFillStyleLst></a:fmtScheme></a:themeElements><a:objectDefaults/><a:extraClrSchemeLst/></a:theme>'
)  # fmt: skip


def a_runs(text: str) -> str:
    pieces = text.replace(NB, " ").split(MARK)
    out = []
    for i, p in enumerate(pieces):
        attrs = ' b="1"' if i and chance(0.5) else ""
        out.append(f'<a:r><a:rPr lang="en-US"{attrs} dirty="0"/><a:t>{xml_escape(p)}</a:t></a:r>')
    return "".join(out)


def pptx_shape(sid: int, name: str, y: int, paras: list[str]) -> str:
    ps = "".join(f"<a:p>{a_runs(p)}</a:p>" for p in paras) or "<a:p/>"
    return (
        f'<p:sp><p:nvSpPr><p:cNvPr id="{sid}" name="{name}"/><p:cNvSpPr txBox="1"/><p:nvPr/></p:nvSpPr>'
        f'<p:spPr><a:xfrm><a:off x="457200" y="{y}"/><a:ext cx="8229600" cy="1143000"/></a:xfrm>'
        f'<a:prstGeom prst="rect"><a:avLst/></a:prstGeom></p:spPr>'
        f'<p:txBody><a:bodyPr wrap="square"/><a:lstStyle/>{ps}</p:txBody></p:sp>'
    )


def make_pptx(slides: list[tuple[str, list[str]]]) -> bytes:
    files = []
    ct = [
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>',
        '<Default Extension="xml" ContentType="application/xml"/>',
        '<Override PartName="/ppt/presentation.xml" ContentType="application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml"/>',
        '<Override PartName="/ppt/slideMasters/slideMaster1.xml" ContentType="application/vnd.openxmlformats-officedocument.presentationml.slideMaster+xml"/>',
        '<Override PartName="/ppt/slideLayouts/slideLayout1.xml" ContentType="application/vnd.openxmlformats-officedocument.presentationml.slideLayout+xml"/>',
        '<Override PartName="/ppt/theme/theme1.xml" ContentType="application/vnd.openxmlformats-officedocument.theme+xml"/>',
    ]  # fmt: skip
    pres_rels = [f'<Relationship Id="rId1" Type="{OD_REL}/slideMaster" Target="slideMasters/slideMaster1.xml"/>',
                 f'<Relationship Id="rId2" Type="{OD_REL}/theme" Target="theme/theme1.xml"/>']  # fmt: skip
    sld_ids = []
    for i, (title, body) in enumerate(slides, 1):
        ct.append(f'<Override PartName="/ppt/slides/slide{i}.xml" ContentType="application/vnd.openxmlformats-officedocument.presentationml.slide+xml"/>')
        pres_rels.append(f'<Relationship Id="rId{i + 2}" Type="{OD_REL}/slide" Target="slides/slide{i}.xml"/>')
        sld_ids.append(f'<p:sldId id="{255 + i}" r:id="rId{i + 2}"/>')
        slide = (
            XML_DECL + f"<p:sld {PNS}><p:cSld><p:spTree>{SPTREE_HEAD}"
            + pptx_shape(2, "Title 1", 274638, [title]) + pptx_shape(3, "Content 2", 1600200, body)
            + '</p:spTree></p:cSld><p:clrMapOvr><a:masterClrMapping/></p:clrMapOvr></p:sld>'
        )  # fmt: skip
        files.append((f"ppt/slides/slide{i}.xml", slide))
        files.append((f"ppt/slides/_rels/slide{i}.xml.rels", XML_DECL + f'<Relationships xmlns="{REL_NS}">'
                      f'<Relationship Id="rId1" Type="{OD_REL}/slideLayout" Target="../slideLayouts/slideLayout1.xml"/></Relationships>'))  # fmt: skip
    pres = (
        XML_DECL + f'<p:presentation {PNS} saveSubsetFonts="1"><p:sldMasterIdLst><p:sldMasterId id="2147483648" r:id="rId1"/></p:sldMasterIdLst>'
        f'<p:sldIdLst>{"".join(sld_ids)}</p:sldIdLst><p:sldSz cx="9144000" cy="6858000" type="screen4x3"/>'
        '<p:notesSz cx="6858000" cy="9144000"/></p:presentation>'
    )  # fmt: skip
    master = (
        XML_DECL + f'<p:sldMaster {PNS}><p:cSld><p:bg><p:bgRef idx="1001"><a:schemeClr val="bg1"/></p:bgRef></p:bg><p:spTree>{SPTREE_HEAD}</p:spTree></p:cSld>'
        '<p:clrMap bg1="lt1" tx1="dk1" bg2="lt2" tx2="dk2" accent1="accent1" accent2="accent2" accent3="accent3" '
        'accent4="accent4" accent5="accent5" accent6="accent6" hlink="hlink" folHlink="folHlink"/>'
        '<p:sldLayoutIdLst><p:sldLayoutId id="2147483649" r:id="rId1"/></p:sldLayoutIdLst></p:sldMaster>'
    )  # fmt: skip
    layout = (
        XML_DECL + f'<p:sldLayout {PNS} type="blank" preserve="1"><p:cSld name="Blank"><p:spTree>{SPTREE_HEAD}</p:spTree></p:cSld>'
        '<p:clrMapOvr><a:masterClrMapping/></p:clrMapOvr></p:sldLayout>'
    )  # fmt: skip
    files = [
        ("[Content_Types].xml", XML_DECL + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">' + "".join(ct) + "</Types>"),
        ("_rels/.rels", XML_DECL + f'<Relationships xmlns="{REL_NS}"><Relationship Id="rId1" Type="{OD_REL}/officeDocument" Target="ppt/presentation.xml"/></Relationships>'),
        ("ppt/presentation.xml", pres),
        ("ppt/_rels/presentation.xml.rels", XML_DECL + f'<Relationships xmlns="{REL_NS}">' + "".join(pres_rels) + "</Relationships>"),
        ("ppt/slideMasters/slideMaster1.xml", master),
        ("ppt/slideMasters/_rels/slideMaster1.xml.rels", XML_DECL + f'<Relationships xmlns="{REL_NS}">'
         f'<Relationship Id="rId1" Type="{OD_REL}/slideLayout" Target="../slideLayouts/slideLayout1.xml"/>'
         f'<Relationship Id="rId2" Type="{OD_REL}/theme" Target="../theme/theme1.xml"/></Relationships>'),
        ("ppt/slideLayouts/slideLayout1.xml", layout),
        ("ppt/slideLayouts/_rels/slideLayout1.xml.rels", XML_DECL + f'<Relationships xmlns="{REL_NS}">'
         f'<Relationship Id="rId1" Type="{OD_REL}/slideMaster" Target="../slideMasters/slideMaster1.xml"/></Relationships>'),
        ("ppt/theme/theme1.xml", THEME),
    ] + files  # fmt: skip
    return make_zip(files)


def csv_field(v: str) -> str:
    v = v.replace(MARK, "").replace(NB, " ")
    if any(c in v for c in ',"\n'):
        return '"' + v.replace('"', '""') + '"'
    return v


def make_csv(t: Table) -> bytes:
    lines = [",".join(csv_field(h) for h in t.headers)]
    lines += [",".join(csv_field(v) for v in r) for r in t.rows]
    data = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    return (b"\xef\xbb\xbf" + data) if chance(0.3) else data


def make_json(t: Table) -> bytes:
    recs = []
    for r in t.rows:
        rec: dict = {}
        for k, v in zip(t.keys, r):
            v = clean(v)
            if re.fullmatch(r"[1-9]\d{0,14}", v) and k not in ("phone", "home_phone", "cell_phone") and chance(0.4):
                rec[k] = int(v)
            else:
                rec[k] = v
        recs.append(rec)
    if chance(0.5):
        obj = {"exported": "2025-03-14T09:30:00Z", "source": pick(["epic-clarity", "billing", "erp"]), "records": recs}
    else:
        obj = recs if len(recs) > 1 else recs[0]
    return (json.dumps(obj, indent=pick([2, None]), ensure_ascii=chance(0.5)) + "\n").encode("utf-8")


def xml_tag(k: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in k.split("_"))


def make_xml(t: Table) -> bytes:
    root, item = pick([("Records", "Record"), ("Export", "Row"), ("Patients", "Patient")]) if "patient_name" in t.keys else ("Export", "Line")  # fmt: skip
    out = ['<?xml version="1.0" encoding="UTF-8"?>', f'<{root} generated="2025-03-14">']
    for r in t.rows:
        out.append(f"  <{item}>")
        for k, v in zip(t.keys, r):
            tag = xml_tag(k)
            out.append(f"    <{tag}>{xml_escape(clean(v))}</{tag}>")
        out.append(f"  </{item}>")
    out.append(f"</{root}>")
    return ("\r\n".join(out) + "\r\n").encode("utf-8")


def ics_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def ics_fold(line: str) -> list[str]:
    out, cur = [], b""
    limit = 75
    for ch in line:
        b = ch.encode("utf-8")
        if len(cur) + len(b) > limit:
            out.append(cur.decode("utf-8"))
            cur = b" " + b
            limit = 75
        else:
            cur += b
    out.append(cur.decode("utf-8"))
    return out


def make_ics(ics: dict) -> bytes:
    d: date = ics["start"]
    h = rng.randint(8, 16)
    start = f"{d:%Y%m%d}T{h:02d}{pick(['00', '30'])}00Z"
    end = f"{d:%Y%m%d}T{h + 1:02d}0000Z"
    uid = f"{rng.getrandbits(64):016x}-{rng.getrandbits(32):08x}"
    lines = [
        "BEGIN:VCALENDAR", "PRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN", "VERSION:2.0",
        "METHOD:REQUEST", "BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20250110T120000Z", f"DTSTART:{start}",
        f"DTEND:{end}", f"SUMMARY:{ics_escape(clean(ics['summary']))}", f"LOCATION:{ics_escape(ics['location'])}",
        "DESCRIPTION:" + ics_escape("\n".join(clean(x) for x in ics["description"])),
        f"ORGANIZER;CN={ics['organizer']}:mailto:{ics['organizer_email']}",
        f"ATTENDEE;ROLE=REQ-PARTICIPANT;RSVP=TRUE:mailto:{ics['attendee_email']}",
        "STATUS:CONFIRMED", "END:VEVENT", "END:VCALENDAR",
    ]  # fmt: skip
    out = []
    for line in lines:
        out += ics_fold(line)
    return ("\r\n".join(out) + "\r\n").encode("utf-8")


# ---------------------------------------------------------------------------
# MIME assembly


def boundary() -> str:
    return f"----=_Part_{rng.randint(1000, 99999)}_{rng.getrandbits(40):010x}"


class Entity:
    def __init__(self, headers: list[tuple[str, str]], body: bytes = b"", children: list["Entity"] | None = None,
                 bnd: str | None = None):  # fmt: skip
        self.headers = headers
        self.body = body
        self.children = children
        self.bnd = bnd

    def to_bytes(self) -> bytes:
        out = b"".join(f"{k}: {v}\r\n".encode("utf-8") for k, v in self.headers) + b"\r\n"
        if self.children is None:
            return out + self.body
        parts = [out]
        if self.body:
            parts.append(self.body + b"\r\n")
        for c in self.children:
            parts.append(f"--{self.bnd}\r\n".encode() + c.to_bytes() + b"\r\n")
        parts.append(f"--{self.bnd}--\r\n".encode())
        return b"".join(parts)


def multipart(subtype: str, children: list[Entity], extra: list[tuple[str, str]] | None = None) -> Entity:
    b = boundary()
    return Entity((extra or []) + [("Content-Type", f'multipart/{subtype}; boundary="{b}"')],
                  b"This is a multi-part message in MIME format." if chance(0.3) else b"", children, b)  # fmt: skip


def crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def text_entity(text: str, subtype: str, charset: str, cte: str, py_cs: str | None = None) -> Entity:
    py_cs = py_cs or charset
    hdr = [("Content-Type", f'text/{subtype}; charset="{charset}"' if chance(0.5) else f"text/{subtype}; charset={charset}")]
    if cte == "quoted-printable":
        body = qp_encode(text, py_cs, dash_hex=chance(0.2))
    elif cte == "base64":
        body = b64_lines(clean(text).replace("\n", "\r\n").encode(py_cs))
    else:
        body = clean(text).replace("\n", "\r\n").encode(py_cs)
    hdr.append(("Content-Transfer-Encoding", cte))
    return Entity(hdr, body)


def attachment_entity(a: Attachment) -> Entity:
    disp = lambda: ("Content-Disposition", f'attachment; filename="{a.filename}"')  # noqa: E731
    if a.kind == "text":
        text = "\n".join(plain_lines(a.blocks))
        cte = pick(["quoted-printable", "base64", "7bit" if clean(text).isascii() else "8bit"])
        e = text_entity(text, "plain", a.charset, cte, "cp1252" if a.charset == "windows-1252" else None)
        e.headers[0] = ("Content-Type", f'text/plain; charset={a.charset}; name="{a.filename}"')
        e.headers.append(disp())
        return e
    if a.kind in ("csv", "json", "xml", "ics"):
        data = {"csv": lambda: make_csv(a.table), "json": lambda: make_json(a.table), "xml": lambda: make_xml(a.table),
                "ics": lambda: make_ics(a.ics)}[a.kind]()  # fmt: skip
        ctype = {"csv": "text/csv; charset=utf-8", "json": "application/json", "xml": pick(["application/xml", "text/xml; charset=utf-8"]),
                 "ics": 'text/calendar; charset="utf-8"; method=REQUEST'}[a.kind]  # fmt: skip
        cte = pick(["base64", "base64", "quoted-printable"])
        body = b64_lines(data) if cte == "base64" else qp_encode(data.decode("utf-8").replace("\r\n", "\n"), "utf-8")
        return Entity([("Content-Type", f'{ctype}; name="{a.filename}"'), ("Content-Transfer-Encoding", cte), disp()], body)
    if a.kind == "rfc822":
        inner = render_doc(a.inner, "plain")
        return Entity([("Content-Type", "message/rfc822"), ("Content-Disposition", f'attachment; filename="{a.filename}"')],
                      inner)  # fmt: skip
    if a.kind in ("pdf-flate", "pdf-plain"):
        data = make_pdf(plain_lines(a.blocks, wrap=False), a.kind == "pdf-flate")
        ctype = "application/pdf"
    elif a.kind == "docx":
        data = make_docx(a.blocks)
        ctype = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    elif a.kind == "xlsx":
        data = make_xlsx(a.table)
        ctype = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    elif a.kind == "pptx":
        texts = plain_lines(a.blocks, wrap=False)
        texts = [t for t in texts if t != ""]
        slides = [(texts[0], texts[1:6])]
        if len(texts) > 6:
            slides.append(("Details", texts[6:]))
        data = make_pptx(slides)
        ctype = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    else:
        raise ValueError(a.kind)
    return Entity([("Content-Type", f'{ctype}; name="{a.filename}"'), ("Content-Transfer-Encoding", "base64"), disp()],
                  b64_lines(data))  # fmt: skip


CHARSET_PY = {"iso-8859-1": "latin-1", "iso-8859-15": "iso8859_15", "iso-8859-2": "iso8859_2",
              "windows-1252": "cp1252", "windows-1250": "cp1250"}  # fmt: skip


def base_headers(d: Doc, subject_value: str) -> list[tuple[str, str]]:
    when = d.date or datetime(2025, 1, 2, 8, 0, tzinfo=timezone(timedelta(hours=-5))) + timedelta(
        minutes=rng.randint(0, 60 * 24 * 330)
    )
    from_name = header_value(d.sender.name)
    to_name = header_value(d.to.name)
    hs = [
        ("From", f'"{from_name}" <{d.sender_email}>' if from_name.isascii() and "=?" not in from_name else f"{from_name} <{d.sender_email}>"),
        ("To", f"{to_name} <{d.to_email}>"),
        ("Subject", subject_value),
        ("Date", when.strftime("%a, %d %b %Y %H:%M:%S %z")),
        ("Message-ID", f"<{rng.getrandbits(64):016x}.{rng.randint(1000, 9999)}@mail.{d.sender_email.split('@')[1]}>"),
        ("MIME-Version", "1.0"),
    ]  # fmt: skip
    if chance(0.3):
        hs.append(("X-Mailer", pick(["Microsoft Outlook 16.0", "Apple Mail (2.3774)", "Thunderbird 115.8.0"])))
    return hs


def render_doc(d: Doc, enc: str) -> bytes:
    # Subject
    if enc in SUBJECT_ENCODINGS:
        _, b_or_q, cs = enc.split("-")
        charset = "utf-8" if cs == "utf8" else "iso-8859-1"
        subj = encoded_words(d.subject, charset, b_or_q.upper(), split_at_marks=chance(0.6))
    else:
        subj = header_value(d.subject)
    headers = base_headers(d, subj)
    text = "\n".join(plain_lines(d.blocks))
    if enc.startswith("charset-"):
        cs = enc[len("charset-") :]
        body = text_entity(text, "plain", cs, pick(["8bit", "quoted-printable"]), CHARSET_PY[cs])
    elif enc == "html":
        html = render_html(d.blocks)
        if chance(0.35):
            body = multipart("alternative", [text_entity(text, "plain", "utf-8", "quoted-printable"),
                                             text_entity(html, "html", "utf-8", pick(["quoted-printable", "8bit"]))])  # fmt: skip
        else:
            body = text_entity(html, "html", "utf-8", pick(["quoted-printable", "8bit", "7bit" if clean(html).isascii() else "8bit"]))
    elif enc == "qp-soft-break":
        body = text_entity(text, "plain", "utf-8", "quoted-printable")
        if chance(0.3):
            body = multipart("alternative", [body, text_entity(render_html(d.blocks), "html", "utf-8", "quoted-printable")])
    elif enc == "base64":
        if chance(0.3):
            body = multipart("alternative", [text_entity(text, "plain", "utf-8", "base64"),
                                             text_entity(render_html(d.blocks), "html", "utf-8", "base64")])  # fmt: skip
        else:
            body = text_entity(text, "plain", "utf-8", "base64")
    else:
        body = text_entity(text, "plain", "utf-8", "7bit" if clean(text).isascii() else "8bit")
    if d.attachments:
        body = multipart("mixed", [body] + [attachment_entity(a) for a in d.attachments])
    top = Entity(headers + body.headers, body.body, body.children, body.bnd)
    return top.to_bytes()


# ---------------------------------------------------------------------------
# Consistency checks on the logical text (before encoding)

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
PHONE_RE = re.compile(r"(?<![\d-])(\+?1[ .-])?(\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\d-])")


def check_doc(d: Doc, name: str) -> None:
    texts = doc_texts(d)
    blob = "\n".join(texts)
    low = blob.lower()
    has_term = any(re.search(r"(?<![a-z])" + re.escape(t.lower()) + r"(?![a-z])", low) for t in HEALTH_VOCAB)
    caution = [w for w in CAUTION_WORDS if w in low]
    if has_term != ("health_terms" in d.kinds) or (caution and "health_terms" not in d.kinds):
        raise AssertionError(f"{name}: health terms {has_term} / {caution} vs labels {sorted(d.kinds)}")
    has_email = bool(EMAIL_RE.search(blob))
    if has_email != ("email_address" in d.kinds):
        raise AssertionError(f"{name}: email {has_email} vs labels {sorted(d.kinds)}")
    has_phone = bool(PHONE_RE.search(blob)) or bool(
        re.search(r"(Phone|Cell|Tel|phone number):? \d{10}\b", blob)
    ) or any(re.fullmatch(r"[3-9]\d{9}", t) for t in texts)
    if has_phone != ("phone" in d.kinds):
        raise AssertionError(f"{name}: phone {has_phone} vs labels {sorted(d.kinds)}: {PHONE_RE.search(blob)}")
    if "npi" not in d.kinds:
        for m in re.finditer(r"(?<![\w-])\d{10}(?![\w-])", blob):
            assert not npi_valid(m.group()), f"{name}: NPI-valid number without npi label"
    if "credit_card" not in d.kinds:
        for m in re.finditer(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])", blob):
            digits_only = re.sub(r"\D", "", m.group())
            assert not luhn_valid(digits_only) or not digits_only[0] in "3456", f"{name}: Luhn-valid card-like number {m.group()!r}"
    if "ssn" not in d.kinds:
        for m in re.finditer(r"(?<![\d-])(\d{3})-(\d{2})-(\d{4})(?![\d-])", blob):
            a, g, s = m.groups()
            assert a in ("000", "666") or a >= "900" or g == "00" or s == "0000", f"{name}: valid SSN shape"
    if "dea" not in d.kinds:
        for m in re.finditer(r"\b[A-Z]{2}\d{7}\b", blob):
            assert not dea_valid(m.group()), f"{name}: valid DEA shape {m.group()}"
    if "mbi" not in d.kinds:
        assert not re.search(r"\b[1-9][A-Z][A-Z0-9]\d[A-Z][A-Z0-9]\d[A-Z]{2}\d{2}\b", blob), name
    for m in d.attachments:
        if m.inner:
            check_doc(m.inner, name + " (inner)")


# ---------------------------------------------------------------------------


def assign_positive_kinds(enc: str) -> list[list[str]]:
    slots = KINDS * 2
    rng.shuffle(slots)
    groups: list[list[str]] = []
    while slots:
        size = 2 if enc in SUBJECT_ENCODINGS else rng.choice([2, 2, 3])
        g: list[str] = []
        rest = []
        for k in slots:
            if len(g) < size and k not in g:
                g.append(k)
            else:
                rest.append(k)
        slots = rest
        groups.append(g)
    return groups


BENIGN_PER_ENCODING = 15


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.eml"):
        old.unlink()
    items: list[tuple[str, Doc]] = []
    idx = 0
    for enc in ENCODINGS:
        for kinds in assign_positive_kinds(enc):
            items.append((enc, positive_doc(enc, kinds, idx)))
            idx += 1
        for _ in range(BENIGN_PER_ENCODING):
            items.append((enc, benign_doc(enc, idx)))
            idx += 1
    order = list(range(len(items)))
    rng.shuffle(order)
    labels = []
    for n, i in enumerate(order, 1):
        enc, d = items[i]
        name = f"{n:04d}-{enc}.eml"
        check_doc(d, name)
        raw = render_doc(d, enc)
        (OUT / name).write_bytes(raw)
        labels.append({
            "file": name, "phi": phi_rule(d.kinds), "kinds": [k for k in KINDS if k in d.kinds],
            "encoding": enc, "where": d.where, "note": d.note,
        })  # fmt: skip
    (ROOT / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    summarize(labels)
    if "--verify" in sys.argv:
        verify([(lab["file"], items[i][1]) for lab, i in zip(labels, order)])


# ---------------------------------------------------------------------------
# --verify: every identifier and hard negative survives the encoding, read
# back with independent parsers (Python's email package, pypdf, openpyxl,
# python-docx, python-pptx). Development aid; not needed for the tests.


def marked_values(d: Doc) -> list[str]:
    out = []
    texts = [d.subject] + block_texts(d.blocks)
    for a in d.attachments:
        texts += block_texts(a.blocks) + (block_texts([("table", a.table)]) if a.table else [])
        if a.ics:
            texts += [a.ics["summary"]] + a.ics["description"]
    for t in texts:
        for tok in re.split(r"[ \n]+", t):
            if MARK in tok:
                out.append(clean(tok).strip(".,;:()<>"))
    return out


def extract_all(raw: bytes) -> str:
    import email
    import email.policy
    import html as htmlmod

    msg = email.message_from_bytes(raw, policy=email.policy.default)
    out = [str(msg["subject"])]
    for part in msg.walk():
        ctype = part.get_content_type()
        if part.is_multipart():
            continue
        if ctype == "message/rfc822":
            continue
        payload = part.get_payload(decode=True)
        if ctype == "text/html":
            t = part.get_content()
            t = re.sub(r"(?s)<style.*?</style>|<!--.*?-->", "", t)
            t = re.sub(r"(?i)<br>|</p>|</td>|</th>|</tr>", "\n", t)
            out.append(htmlmod.unescape(re.sub(r"<[^>]+>", "", t)))
        elif ctype == "text/calendar":
            t = payload.decode("utf-8").replace("\r\n ", "")
            out.append(t.replace("\\,", ",").replace("\\;", ";").replace("\\n", "\n"))
        elif ctype.startswith("text/") or ctype in ("application/json", "application/xml"):
            out.append(part.get_content() if ctype.startswith("text/") else payload.decode("utf-8"))
        elif ctype == "application/pdf":
            import pypdf

            r = pypdf.PdfReader(io.BytesIO(payload))
            out += [pg.extract_text() for pg in r.pages]
        elif ctype.endswith("wordprocessingml.document"):
            import docx

            dd = docx.Document(io.BytesIO(payload))
            out += [p.text for p in dd.paragraphs]
            out += [c.text for t in dd.tables for row in t.rows for c in row.cells]
        elif ctype.endswith("spreadsheetml.sheet"):
            import openpyxl

            wb = openpyxl.load_workbook(io.BytesIO(payload))
            out += [str(c.value) for ws in wb.worksheets for row in ws.iter_rows() for c in row if c.value is not None]
        elif ctype.endswith("presentationml.presentation"):
            import pptx

            pr = pptx.Presentation(io.BytesIO(payload))
            out += [sh.text_frame.text for sl in pr.slides for sh in sl.shapes if sh.has_text_frame]
        else:
            raise AssertionError(f"unexpected part {ctype}")
    return "\n".join(out)


def verify(pairs: list[tuple[str, Doc]]) -> None:
    bad = checked = 0
    for name, d in pairs:
        text = extract_all((OUT / name).read_bytes())
        norm = re.sub(r"\s+", " ", text)
        for v in marked_values(d) + [
            v for a in d.attachments if a.inner for v in marked_values(a.inner)
        ]:
            checked += 1
            if v not in norm:
                bad += 1
                print(f"verify: {name}: a value did not survive ({len(v)} chars)")
    print(f"verify: {len(pairs)} messages read back, {checked} values checked, {bad} problems")
    if bad:
        sys.exit(1)


def summarize(labels: list[dict]) -> None:
    total = sum((OUT / lab["file"]).stat().st_size for lab in labels)
    phi = sum(lab["phi"] for lab in labels)
    print(f"{len(labels)} messages, {phi} PHI, {len(labels) - phi} not PHI, {total / 1e6:.2f} MB")
    for k in KINDS:
        pos = [lab for lab in labels if k in lab["kinds"]]
        encs = {lab["encoding"] for lab in pos}
        print(f"  {k:15} {len(pos):4} positives over {len(encs)} encodings")
    for enc in ENCODINGS:
        e = [lab for lab in labels if lab["encoding"] == enc]
        print(f"  {enc:22} {len(e):3} messages, {sum(x['phi'] for x in e):3} PHI")


if __name__ == "__main__":
    main()
