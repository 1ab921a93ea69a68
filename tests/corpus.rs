//! Accuracy on the project's labelled corpus (corpus/README.md).
//!
//! Every message in `corpus/messages` is scanned with the default settings
//! and compared with `corpus/labels.json`:
//!
//! - per detector kind, presence per message: TP / FP / FN, precision and
//!   recall (recall >= 0.97, precision >= 0.95);
//! - per message, PHI as decided by `ward::policy::content_is_phi`: recall
//!   over the PHI messages (>= 0.99) and the false-positive rate over the
//!   messages without PHI (<= 0.02).
//!
//! The tables print on failure, or always with
//! `cargo test --test corpus -- --nocapture`. Failures name files and kinds,
//! never a matched value.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;
use ward::scan::{Confidence, Finding, Kind, Part, ScanSettings, Scanner, Verdict};

const MIN_MESSAGE_RECALL: f64 = 0.99;
const MAX_BENIGN_FP_RATE: f64 = 0.02;
const MIN_DETECTOR_RECALL: f64 = 0.97;
const MIN_DETECTOR_PRECISION: f64 = 0.95;
/// Most files listed per detector and direction in a failure report.
const MAX_LISTED: usize = 100;

#[derive(Debug, Deserialize)]
struct Label {
    file: String,
    phi: bool,
    kinds: Vec<String>,
    encoding: String,
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn labels() -> Vec<Label> {
    let path = corpus_dir().join("labels.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn label_kinds(label: &Label) -> BTreeSet<Kind> {
    label
        .kinds
        .iter()
        .map(|id| Kind::parse(id).unwrap_or_else(|| panic!("{}: unknown kind {id:?}", label.file)))
        .collect()
}

fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn show(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}"))
}

#[derive(Default)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
    missed: Vec<String>,
    false_alarms: Vec<String>,
}

impl Counts {
    fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }
    fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }
}

fn kind_list(kinds: &BTreeSet<Kind>) -> String {
    if kinds.is_empty() {
        return "-".to_string();
    }
    kinds.iter().map(|k| k.id()).collect::<Vec<_>>().join(",")
}

fn list_files(out: &mut String, title: &str, files: &[String]) {
    if files.is_empty() {
        return;
    }
    out.push_str(&format!("    {title} ({}):\n", files.len()));
    for f in files.iter().take(MAX_LISTED) {
        out.push_str(&format!("      {f}\n"));
    }
    if files.len() > MAX_LISTED {
        out.push_str(&format!("      ... and {} more\n", files.len() - MAX_LISTED));
    }
}

#[test]
fn detectors_and_policy_meet_accuracy_targets_on_the_corpus() {
    let labels = labels();
    let scanner = Scanner::new(ScanSettings::default());
    let dir = corpus_dir().join("messages");

    let mut per_kind: BTreeMap<Kind, Counts> =
        Kind::ALL.into_iter().map(|k| (k, Counts::default())).collect();
    // encoding -> (labelled kind presences in its messages, found)
    let mut per_encoding: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let (mut phi_total, mut phi_found, mut benign_total, mut benign_flagged) = (0, 0, 0, 0);
    let mut phi_missed = Vec::new();
    let mut benign_false_alarms = Vec::new();

    for label in &labels {
        let raw = std::fs::read(dir.join(&label.file)).unwrap_or_else(|e| panic!("{}: {e}", label.file));
        let verdict = scanner.scan(&raw);
        let truth = label_kinds(label);
        let found: BTreeSet<Kind> = verdict.kinds().into_iter().collect();
        let unscanned = if verdict.unscanned.is_empty() {
            String::new()
        } else {
            format!(
                " unscanned={:?}",
                verdict.unscanned.iter().map(|u| u.reason).collect::<Vec<_>>()
            )
        };
        let line = format!(
            "{} [{}] labelled={} found={}{unscanned}",
            label.file,
            label.encoding,
            kind_list(&truth),
            kind_list(&found)
        );
        let enc = per_encoding.entry(label.encoding.as_str()).or_default();
        for kind in Kind::ALL {
            let c = per_kind.get_mut(&kind).expect("every kind");
            match (truth.contains(&kind), found.contains(&kind)) {
                (true, true) => {
                    c.tp += 1;
                    enc.0 += 1;
                    enc.1 += 1;
                }
                (true, false) => {
                    c.fn_ += 1;
                    c.missed.push(line.clone());
                    enc.0 += 1;
                }
                (false, true) => {
                    c.fp += 1;
                    c.false_alarms.push(line.clone());
                }
                (false, false) => {}
            }
        }
        let predicted = ward::policy::content_is_phi(&verdict);
        if label.phi {
            phi_total += 1;
            if predicted {
                phi_found += 1;
            } else {
                phi_missed.push(line);
            }
        } else {
            benign_total += 1;
            if predicted {
                benign_flagged += 1;
                benign_false_alarms.push(line);
            }
        }
    }

    let mut report = String::new();
    report.push_str(&format!(
        "\ncorpus: {} messages ({phi_total} PHI, {benign_total} without PHI)\n\n",
        labels.len()
    ));
    report.push_str(&format!(
        "{:<16} {:>9} {:>5} {:>5} {:>5} {:>9} {:>7}\n",
        "detector", "positives", "TP", "FP", "FN", "precision", "recall"
    ));
    let mut failures = Vec::new();
    for (kind, c) in &per_kind {
        report.push_str(&format!(
            "{:<16} {:>9} {:>5} {:>5} {:>5} {:>9} {:>7}\n",
            kind.id(),
            c.tp + c.fn_,
            c.tp,
            c.fp,
            c.fn_,
            show(c.precision()),
            show(c.recall())
        ));
        if c.recall().unwrap_or(0.0) < MIN_DETECTOR_RECALL {
            failures.push(format!(
                "{kind}: recall {} < {MIN_DETECTOR_RECALL}",
                show(c.recall())
            ));
        }
        // No predictions at all is a failure too (the recall check reports it).
        if c.precision().is_some_and(|p| p < MIN_DETECTOR_PRECISION) {
            failures.push(format!(
                "{kind}: precision {} < {MIN_DETECTOR_PRECISION}",
                show(c.precision())
            ));
        }
    }

    report.push_str(&format!(
        "\n{:<22} {:>9} {:>6} {:>7}\n",
        "encoding", "labelled", "found", "recall"
    ));
    for (enc, (pos, found)) in &per_encoding {
        report.push_str(&format!(
            "{enc:<22} {pos:>9} {found:>6} {:>7}\n",
            show(ratio(*found, *pos))
        ));
    }

    let message_recall = ratio(phi_found, phi_total);
    let fp_rate = ratio(benign_flagged, benign_total);
    report.push_str(&format!(
        "\nmessage-level: PHI recall {} ({phi_found}/{phi_total}), benign false-positive rate {} \
         ({benign_flagged}/{benign_total})\n",
        show(message_recall),
        show(fp_rate)
    ));
    if message_recall.unwrap_or(0.0) < MIN_MESSAGE_RECALL {
        failures.push(format!(
            "message recall {} < {MIN_MESSAGE_RECALL}",
            show(message_recall)
        ));
    }
    if fp_rate.unwrap_or(1.0) > MAX_BENIGN_FP_RATE {
        failures.push(format!(
            "benign false-positive rate {} > {MAX_BENIGN_FP_RATE}",
            show(fp_rate)
        ));
    }
    println!("{report}");

    if !failures.is_empty() {
        let mut detail = String::new();
        for (kind, c) in &per_kind {
            if c.missed.is_empty() && c.false_alarms.is_empty() {
                continue;
            }
            detail.push_str(&format!("  {kind}:\n"));
            list_files(&mut detail, "missed", &c.missed);
            list_files(&mut detail, "false alarms", &c.false_alarms);
        }
        detail.push_str("  messages:\n");
        list_files(&mut detail, "PHI not detected", &phi_missed);
        list_files(&mut detail, "benign flagged as PHI", &benign_false_alarms);
        println!("files (kinds only, never values):\n{detail}");
        panic!(
            "corpus accuracy below target (tables above):\n  {}",
            failures.join("\n  ")
        );
    }
}

/// The generator's output is what is committed: labels.json lists exactly
/// the .eml files present, each once, with known kinds, and every label's
/// `phi` follows the policy rule (checked through `content_is_phi` itself).
#[test]
fn labels_match_the_messages_and_the_policy_rule() {
    let labels = labels();
    let mut listed = BTreeSet::new();
    for label in &labels {
        assert!(
            listed.insert(label.file.clone()),
            "{} is listed twice",
            label.file
        );
        assert!(!label.encoding.is_empty(), "{}: no encoding", label.file);
        let verdict = Verdict {
            findings: label_kinds(label)
                .into_iter()
                .map(|kind| Finding {
                    kind,
                    count: 1,
                    part: Part::Body,
                    confidence: Confidence::High,
                })
                .collect(),
            ..Verdict::default()
        };
        assert_eq!(
            ward::policy::content_is_phi(&verdict),
            label.phi,
            "{}: label phi={} disagrees with the policy rule for kinds {:?}",
            label.file,
            label.phi,
            label.kinds
        );
    }
    let present: BTreeSet<String> = std::fs::read_dir(corpus_dir().join("messages"))
        .expect("corpus/messages")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    let unlabelled: Vec<_> = present.difference(&listed).collect();
    let missing: Vec<_> = listed.difference(&present).collect();
    assert!(
        unlabelled.is_empty() && missing.is_empty(),
        "corpus out of date (re-run corpus/generate.py): unlabelled files {unlabelled:?}, labelled but missing {missing:?}"
    );
    assert!(labels.len() >= 500, "corpus unexpectedly small: {}", labels.len());
    for kind in Kind::ALL {
        let n = labels
            .iter()
            .filter(|l| l.kinds.iter().any(|k| k == kind.id()))
            .count();
        assert!(n >= 40, "only {n} messages contain {kind}");
    }
}
