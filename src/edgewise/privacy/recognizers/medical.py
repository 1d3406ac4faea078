"""Health information: medical record numbers, ICD-10 codes, drug names, clinical words.

* ``MRN`` (level ``phi``, HIPAA identifier 8): only with a record key word — right
  before the number (``MRN: 00457812``, ``medical record no. E1234567``, ``patient ID
  4567890``) or within a few words (``her MRN is 12-345-678``). There is no national
  MRN format; hospitals use 6–10 digits, sometimes with a letter prefix or dashes.
* ``ICD10_CODE``: the ICD-10(-CM) shape — a letter, two digits or digit + A/B, an
  optional dot and up to four more characters (``E11.9``, ``J45.909``, ``S72.001A``,
  ``C7A.1``) — and medical context: a diagnosis key word nearby (``dx``, ``ICD-10``,
  ``diagnosis``…) or, for dotted codes only, a clinical word anywhere in the text.
  ``seat A12``, ``vitamin B12`` or ``the E11 motorway`` are not codes.
* ``DRUG_NAME``: whole-word match against ``data/drugs.txt`` (about 420 generic and
  brand names; where the list comes from is written at its top).
* ``MEDICAL_CONTEXT``: clinical words and common diagnoses (``patient``, ``diagnosed``,
  ``prescribed``, ``chemotherapy``, ``HIV``, ``diabetes``…). "Be patient" is not a
  patient.

ICD-10 codes, drugs and clinical words are ``public`` alone; they are the health half
of the PHI rule (``edgewise.privacy.levels``).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from presidio_analyzer import RecognizerResult

from edgewise.privacy.recognizers.base import RegexRecognizer, Rule, words

__all__ = ["MedicalRecognizer", "drug_names"]

_CLINICAL_WORDS = [
    "diagnosis", "diagnoses", "diagnosed", "prognosis", "prescription", "prescriptions",
    "prescribed", "medication", "medications", "dosage", "symptom", "symptoms",
    "chemotherapy", "chemo", "radiotherapy", "radiation therapy", "dialysis", "surgery",
    "surgical", "biopsy", "post-op", "pre-op", "hospitalized", "hospitalised",
    "hospitalization", "hospitalisation", "inpatient", "outpatient", "discharge summary",
    "admitted to hospital", "emergency room", "intensive care", "medical record",
    "medical records", "medical history", "health record", "health records",
    "lab results", "blood test", "blood pressure", "ct scan", "x-ray", "ultrasound",
    "oncologist", "cardiologist", "psychiatrist", "neurologist", "endocrinologist",
    "allergic to", "diabetes", "diabetic", "cancer", "tumor", "tumour", "carcinoma",
    "melanoma", "lymphoma", "leukemia", "leukaemia", "hepatitis", "asthma",
    "hypertension", "depression", "depressive", "anxiety disorder", "bipolar",
    "schizophrenia", "dementia", "alzheimer's", "parkinson's", "epilepsy", "seizures",
    "heart attack", "myocardial infarction", "pneumonia", "tuberculosis", "covid-19",
    "sepsis", "pregnant", "pregnancy", "miscarriage", "chlamydia", "syphilis",
    "gonorrhea", "overdose", "addiction", "substance abuse", "rehab", "eating disorder",
    "anorexia", "bulimia", "kidney failure", "renal failure", "cirrhosis", "arthritis",
    "multiple sclerosis", "lupus", "crohn's", "colitis", "migraine", "migraines",
    "insomnia", "stroke patient", "mental health", "psychiatric", "psychotherapy",
    "physiotherapy", "vaccination", "immunization", "transplant", "mastectomy",
    "appendectomy", "prenatal", "postpartum", "contraception", "hiv positive",
]
# Upper-case abbreviations: matched case-sensitively ("AIDS", not "aids").
_CLINICAL_ABBREVIATIONS = ["HIV", "AIDS", "COPD", "PTSD", "ADHD", "ICU", "MRI", "STD",
                           "STI", "OCD", "CKD", "CHF", "GERD", "DVT", "T2DM"]
# "patient" the noun, not the adjective: not after be/so/very/more/stay/remain…
_PATIENT = re.compile(
    r"(?<![A-Za-z])(?<!be )(?<!so )(?<!too )(?<!very )(?<!more )(?<!stay )(?<!less )"
    r"(?<!remain )(?<!being )(?<!quite )(?<!keep )(?<!been )(?<!extremely )"
    r"[Pp]atients?(?![A-Za-z])(?!ly)")

_ICD_CONTEXT = words([
    "icd", "icd-10", "icd10", "icd-10-cm", "icd 10", "dx", "ddx", "diagnosis",
    "diagnoses", "diagnosed", "diagnostic", "comorbidity", "comorbidities",
    "problem list", "assessment", "billing code", "billed", "claim", "differential",
])
# The record-number words of the EU languages (text is accent-folded first): German
# Patienten-/Fallnummer, French dossier médical / IPP, Spanish historia clínica / NHC,
# Italian cartella clinica, Portuguese prontuário / processo clínico, Dutch patiëntnummer.
_MRN_FOREIGN = (r"patienten-?(?:nummer|nr\.?|id)|fallnummer|fall-nr\.?|krankenakte"
                r"|dossier\s+m[eé]dical|num[eé]ro\s+(?:de\s+|d')?(?:dossier|patient)"
                r"|(?<![\w])ipp|n[uú]mero\s+de\s+(?:historia(?:\s+cl[ií]nica)?|paciente)"
                r"|historia\s+cl[ií]nica|(?<![\w])nhc|cartella\s+clinica"
                r"|numero\s+(?:di\s+)?cartella|numero\s+(?:del\s+)?paziente"
                r"|prontu[aá]rio|processo\s+cl[ií]nico|n[uú]mero\s+(?:do|de)\s+(?:utente|paciente)"
                r"|pati[eë]ntnummer|pati[eë]nt-?id|dossiernummer")
_MRN_WORDS = (r"(?:mrn|mr#|medical\s+records?|record\s+(?:number|no)|chart|patient\s+id"
              r"|patient\s+number|hospital\s+number|med\s+rec|unit\s+number|"
              + _MRN_FOREIGN + r")")
_MRN_KEY = (
    r"(?:MRN|MR\s?#|MR\s?(?:no|num|number)\.?|medical\s+record\s+(?:number|no\.?|num\.?|#)"
    r"|med\.?\s*rec(?:ord)?\.?\s*(?:no\.?|num\.?|number|#)?|hospital\s+(?:number|no\.?|#)"
    r"|chart\s+(?:number|no\.?|#)|patient\s+(?:id|identifier|number|no\.?|#)"
    r"|unit\s+(?:number|no\.?)|" + _MRN_FOREIGN + r")"
)
_MRN_VALUE = r"(?:[A-Z]{1,3}-?)?\d(?:[\d\-]{4,12})\d"


def _not_date(value: str) -> bool:
    return not re.fullmatch(r"\d{2,4}-\d{1,2}-\d{1,4}", value)


@cache
def drug_names() -> tuple[str, ...]:
    """The drug list shipped in ``edgewise/privacy/data/drugs.txt``."""
    text = resources.files("edgewise.privacy").joinpath("data/drugs.txt").read_text(
        encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines()
                 if line.strip() and not line.startswith("#"))


def _rules() -> list[Rule]:
    clinical = words(_CLINICAL_WORDS)
    abbreviations = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(_CLINICAL_ABBREVIATIONS)
                               + r")(?![A-Za-z0-9])")
    return [
        Rule("MRN", "mrn after its key word",
             re.compile(r"(?i)\b" + _MRN_KEY + r"[\"']?\s*(?:is\s+|[:#=\-]\s*)?[\"']?(?P<v>"
                        + _MRN_VALUE + r")(?![A-Za-z0-9]|-\d)"), 0.95, group="v",
             validate=_not_date),
        # "her MRN is 12-345-678", "MRN for Jane Doe: 4567890": the key word, then up
        # to 40 characters without digits or a line break, then the number.
        Rule("MRN", "mrn a few words after its key word",
             re.compile(r"(?i)\b" + _MRN_WORDS + r"\b[^\d\n]{1,40}?(?<![A-Za-z0-9\-])(?P<v>"
                        + _MRN_VALUE + r")(?![A-Za-z0-9]|-\d)"), 0.8, group="v",
             validate=_not_date),
        Rule("ICD10_CODE", "icd-10 code",
             re.compile(r"(?<![A-Za-z0-9.\-])[A-Z][0-9][0-9AB](?:\.[0-9A-Z]{1,4})?"
                        r"(?![A-Za-z0-9]|\.[0-9A-Za-z])"),
             0.0, context=_ICD_CONTEXT, context_score=0.85, window=(80, 24)),
        Rule("DRUG_NAME", "drug name", words(drug_names()), 0.85),
        Rule("MEDICAL_CONTEXT", "clinical word", clinical, 0.85),
        Rule("MEDICAL_CONTEXT", "clinical abbreviation", abbreviations, 0.85),
        Rule("MEDICAL_CONTEXT", "patient", _PATIENT, 0.85),
    ]


_ANY_CLINICAL = words(_CLINICAL_WORDS)


class MedicalRecognizer(RegexRecognizer):
    """``MRN``, ``ICD10_CODE``, ``DRUG_NAME`` and ``MEDICAL_CONTEXT``."""

    def __init__(self) -> None:
        super().__init__("EdgewiseMedicalRecognizer", _rules())

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, nlp_artifacts)
        if entities and "ICD10_CODE" not in entities:
            return results
        # A dotted code in a text that is clinical anyway ("the patient's E11.9 is
        # controlled") counts without a diagnosis key word next to it.
        if not (_ANY_CLINICAL.search(text) or _PATIENT.search(text)):
            return results
        rule = next(r for r in self.rules if r.entity == "ICD10_CODE")
        found = {(r.start, r.end) for r in results if r.entity_type == "ICD10_CODE"}
        for m in rule.regex.finditer(text):
            if "." in m.group() and m.span() not in found:
                results.append(RecognizerResult(
                    entity_type="ICD10_CODE", start=m.start(), end=m.end(), score=0.6,
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.recognizer_name,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                        "rule": "dotted icd-10 code in clinical text",
                    }))
        return results
