//! The rule loader behind `nightowl rules check` and the backtest API
//! (`detect::load::parse_str`, native and Sigma YAML). Beyond not
//! panicking:
//! - a rule file the loader accepts also compiles into a live `Engine`
//!   (what `rules check` promises for `serve`);
//! - every error names the file and a line inside the text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nightowl::detect::engine::Engine;
use nightowl::detect::load::parse_str;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.yaml");
    match parse_str(text, path) {
        Ok(rules) => {
            let specs: Vec<_> = rules.into_iter().map(|r| r.spec).collect();
            if let Err((id, e)) = Engine::new(&specs) {
                panic!("accepted rule {id:?} does not compile: {}", e.message);
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            let lines = text.lines().count() + 1;
            for e in &errors {
                assert_eq!(e.file, path);
                assert!(e.line <= lines, "line {} of {lines}: {}", e.line, e.message);
            }
        }
    }
});
