//! The payload detectors (`detect::payload`: SQLi, XSS, command injection,
//! traversal) and their normaliser on arbitrary field text. Beyond not
//! panicking:
//! - a verdict depends on the text alone: a scratch that has just seen
//!   other input answers as a fresh one does;
//! - case does not matter (`%2E` and `%2e`, `UNION` and `union`): the
//!   matcher hands the detectors its lowercased view, and the detectors
//!   must agree with themselves on the logged case;
//! - normalising never grows the text (the buffers are reused line after
//!   line on that promise), and is idempotent on a value without escapes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nightowl::detect::payload::decode::normalize;
use nightowl::detect::payload::{detect, Payload, PayloadScratch};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut fresh = PayloadScratch::new();
    let mut used = PayloadScratch::new();
    for kind in Payload::ALL {
        // Dirty the reused scratch with the text backwards first.
        let rev: String = text.chars().rev().collect();
        let _ = detect(kind, &rev, &mut used);
        let a = detect(kind, text, &mut fresh);
        let b = detect(kind, text, &mut used);
        assert_eq!(a, b, "{kind:?}: verdict depends on the scratch's past");
        let lower = text.to_ascii_lowercase();
        let c = detect(kind, &lower, &mut fresh);
        assert_eq!(a, c, "{kind:?}: verdict depends on case");
    }
    let (mut out, mut tmp) = (Vec::new(), Vec::new());
    normalize(data, &mut out, &mut tmp);
    assert!(out.len() <= data.len(), "normalising grew the text");
    if !out.iter().any(|c| matches!(c, b'%' | b'\\' | b'+')) {
        let (mut again, mut tmp2) = (Vec::new(), Vec::new());
        normalize(&out, &mut again, &mut tmp2);
        assert_eq!(again, out, "normalising twice changed an escape-free value");
    }
});
