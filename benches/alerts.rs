//! The alert stage under an alert storm: 12,600 open alerts (a day of one
//! public access log's scanners, one alert per client), then the work one
//! more repeat firing costs the alert thread: merge, tick, persist.
//!
//! The persist writes the rows that changed; `reference_whole_state_json`
//! measures what serializing the whole state (the store's format before
//! rows) costs at this size, for comparison in notes and docs.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use nightowl::alert::config::AlertingConfig;
use nightowl::alert::engine::{Engine, State};
use nightowl::alert::store::Store;
use nightowl::detect::{Firing, Severity};

const SEC: i64 = 1_000_000_000;
const T0: i64 = 1_800_000_000 * SEC;
const ALERTS: usize = 12_600;

fn firing(key: usize, at: i64) -> Firing {
    Firing {
        rule_id: "scanner-404".into(),
        title: "scanner".into(),
        severity: Severity::Warning,
        tenant: "default".into(),
        key: format!("198.51.{}.{}", key / 256, key % 256),
        count: 20,
        value: None,
        window: 60.0,
        first_ts: at,
        last_ts: at,
        sample_lines: vec![format!(
            "198.51.{}.{} - - [01/Jan/2027:00:00:00 +0000] \"GET /.env HTTP/1.1\" 404 153 \"-\" \"zgrab/0.x\"",
            key / 256,
            key % 256
        )],
        labels: BTreeMap::new(),
        tags: vec!["scanner".into()],
        evidence_query: "status:404".into(),
    }
}

fn storm(c: &mut Criterion) {
    let config: AlertingConfig = toml::from_str(
        r#"
        [route]
        receiver = "hook"
        group_by = ["alertname", "key"]
        [[receivers]]
        name = "hook"
        kind = "webhook"
        url = "http://127.0.0.1:9/hook"
        "#,
    )
    .expect("bench config");
    let mut engine = Engine::new(&config, "https://bench".into(), State::default());
    for k in 0..ALERTS {
        engine.on_firing(&firing(k, T0), T0);
    }
    let mut now = T0 + 11 * SEC;
    engine.tick(now);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    store
        .commit(Some(&mut engine.state), &[], &[])
        .expect("first persist");

    let mut group = c.benchmark_group("alert_storm");
    let mut k = 0;
    group.bench_function("repeat_tick_persist", |b| {
        b.iter(|| {
            k = (k + 7919) % ALERTS;
            now += SEC / 1000;
            engine.on_firing(&firing(k, now), now);
            black_box(engine.tick(now));
            store
                .commit(Some(&mut engine.state), &[], &[])
                .expect("persist");
        })
    });
    group.bench_function("tick_only", |b| {
        b.iter(|| {
            now += SEC / 1000;
            black_box(engine.tick(now));
        })
    });
    // One alert in a hundred critical: the default inhibition rule (a
    // critical alert mutes the warnings of its key) has sources to match.
    for k in (0..ALERTS).step_by(100) {
        let mut critical = firing(k, now);
        critical.rule_id = "scanner-critical".into();
        critical.severity = Severity::Critical;
        engine.on_firing(&critical, now);
    }
    group.bench_function("tick_one_percent_critical", |b| {
        b.iter(|| {
            now += SEC / 1000;
            black_box(engine.tick(now));
        })
    });
    group.sample_size(10);
    group.bench_function("reference_whole_state_json", |b| {
        b.iter(|| black_box(serde_json::to_vec(&engine.state).expect("json").len()))
    });
    group.finish();
}

criterion_group!(benches, storm);
criterion_main!(benches);
