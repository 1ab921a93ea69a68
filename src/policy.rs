//! Policy: verdict + envelope + rules → action per recipient.
//!
//! For now only the content rule that the default policy uses to decide
//! whether a message carries PHI (`tests/corpus.rs` measures it against the
//! labelled corpus); the full policy engine replaces this file and keeps
//! [`content_is_phi`].

use crate::scan::{Kind, Verdict};

/// Whether the scanned content is PHI under the default rule: any patient
/// identifier (SSN, MBI, MRN, date of birth, health plan id, ICD-10 code,
/// payment card), or health terms together with a phone number or an email
/// address. NPI and DEA numbers identify providers and are not PHI alone.
pub fn content_is_phi(verdict: &Verdict) -> bool {
    let has = |k: Kind| verdict.count(k) > 0;
    [
        Kind::Ssn,
        Kind::Mbi,
        Kind::Mrn,
        Kind::Dob,
        Kind::HealthPlanId,
        Kind::Icd10,
        Kind::CreditCard,
    ]
    .into_iter()
    .any(has)
        || (has(Kind::HealthTerms) && (has(Kind::Phone) || has(Kind::EmailAddress)))
}
