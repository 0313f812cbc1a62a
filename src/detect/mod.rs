//! Streaming detection rules (MISSION rows 10–19).
//!
//! Rules are YAML ([`rule`]), loaded and checked with file:line errors
//! ([`load`]), their filters compiled into one shared set of interned tests
//! ([`compile`], [`matcher`]) and their detections per kind ([`kind`]: one
//! file per kind, its compile and its step), and evaluated on every parsed
//! line by the [`Engine`], which keeps bounded per-key state in event time
//! ([`window`]) and emits [`Firing`]s. [`fixtures`] runs the rules' tests;
//! [`cli`] is the security team's offline loop (`rules check`, `rules
//! test`, `rules run`).
//! [`sigma`] translates Sigma rules (webserver category) into the same
//! specs, so they run in the same match set.
//!
//! The shape of a rule:
//!
//! ```yaml
//! id: web-login-brute-force
//! title: Brute force on a login endpoint
//! severity: warning            # info | warning | critical
//! labels: {team: security}
//! tags: [attack.t1110]
//! match:
//!   all:
//!     - {field: status, equals: [401, 403]}
//!     - {field: path, regex: '/(login|signin)'}
//! detect:
//!   kind: threshold            # match threshold distinct ratio sequence
//!   key: client_ip             # new_value spike flatline burn_rate
//!   window: 5m
//!   count: 20
//! tests:
//!   - name: twenty failures fire
//!     lines: |
//!       ...
//!     expect: [{key: 1.2.3.4, count: 20}]
//! ```

pub mod builtin;
pub mod cli;
pub mod compile;
pub mod engine;
pub mod field;
pub mod firing;
pub mod fixtures;
pub mod keymap;
pub mod kind;
pub mod live;
pub mod load;
pub mod matcher;
pub mod payload;
pub mod recent;
pub mod reload;
pub mod rule;
pub mod sigma;
pub mod snapshot;
pub mod window;

pub use engine::{Carried, Engine, EngineOptions, Routing, RuleStats};
pub use firing::Firing;
pub use load::{load_dir, BadRules, LoadedRule, RuleError};
pub use recent::RecentFirings;
pub use rule::{RuleSpec, Severity};
