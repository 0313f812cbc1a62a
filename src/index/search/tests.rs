use std::sync::atomic::Ordering;
use std::sync::Arc;

use tantivy::collector::{Collector, Count, SegmentCollector, TopDocs};
use tantivy::Index;
use tantivy::{DocId, SegmentReader, TantivyDocument};

use super::budget::DOCS_PER_CHECK;
use super::*;
use crate::index::catalog::Catalog;
use crate::index::schema::{Layout, LogSchema};
use crate::parse::{parse_line, Format, ParseContext};
use crate::time::NANOS_PER_DAY;

#[test]
fn a_pattern_query_finds_the_lines_of_the_patterns_merged_into_it() {
    let index = Indexed::of(|schema, at| {
        [
            ("one", "aaaaaaaaaaaa"),
            ("two", "bbbbbbbbbbbb"),
            ("three", "cccccccccccc"),
        ]
        .into_iter()
        .map(|(raw, pattern)| {
            let mut doc = schema.document(None, raw, at, "h", "s");
            doc.add_text(schema.pattern.expect("pattern field"), pattern);
            doc
        })
        .collect()
    });
    let (catalog, range) = (&index.catalog, index.range);
    let n = |q: &str| count(catalog, "t", q, range).expect("counts");
    assert_eq!(n("pattern:aaaaaaaaaaaa"), 1);
    catalog
        .pattern_aliases
        .set("t", "aaaaaaaaaaaa", vec!["bbbbbbbbbbbb".into()]);
    assert_eq!(n("pattern:aaaaaaaaaaaa"), 2);
    assert_eq!(n("pattern:aaaaaaaaaaaa AND two"), 1);
    assert_eq!(n("NOT pattern:aaaaaaaaaaaa"), 1);
    assert_eq!(
        n("pattern:bbbbbbbbbbbb"),
        1,
        "an alias alone is its own lines"
    );
    assert_eq!(
        count(catalog, "u", "pattern:aaaaaaaaaaaa", range).ok(),
        Some(0),
        "another tenant's merges are not this one's"
    );
}

#[test]
fn partitions_from_before_the_pattern_field_are_left_out_of_pattern_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let day = 20_000;
    let at = day * NANOS_PER_DAY + 1;
    {
        let catalog = Catalog::open(dir.path()).expect("catalog");
        // A V1 partition as created before `pattern` existed: every
        // other field, with the same ids (it is the schema's last field).
        let v1 = LogSchema::v1();
        let mut old = tantivy::schema::Schema::builder();
        for (_, entry) in v1.schema.fields() {
            if entry.name() != "pattern" {
                old.add_field(entry.clone());
            }
        }
        let old = LogSchema::from_schema(old.build()).expect("old schema");
        let path = catalog.partition_dir("t", day, 0);
        std::fs::create_dir_all(&path).expect("dir");
        let index = Index::create_in_dir(&path, old.schema.clone()).expect("old index");
        let mut writer = index.writer::<TantivyDocument>(15_000_000).expect("writer");
        writer
            .add_document(old.document(None, "old line", at, "h", "s"))
            .expect("adds");
        writer.commit().expect("commits");
    }
    let catalog = Catalog::open(dir.path()).expect("reopens");
    let range = TimeRange {
        since: day * NANOS_PER_DAY,
        until: (day + 2) * NANOS_PER_DAY,
    };
    let old = catalog.partitions("t", day, day);
    assert!(old[0].schema.pattern.is_none());
    assert_eq!(old[0].schema.layout, Layout::V1);
    assert_eq!(
        search(&catalog, "t", "old", range, 10)
            .expect("searches")
            .len(),
        1
    );
    for query in ["pattern:0123456789ab", "old AND pattern:0123456789ab"] {
        assert!(search(&catalog, "t", query, range, 10)
            .expect("searches")
            .is_empty());
    }
    let new = catalog
        .get_or_create("t", day + 1, 0)
        .expect("new partition");
    assert!(new.schema.pattern.is_some());
}

fn count_in_ram(texts: &[(&str, u64)], query: &str) -> usize {
    let schema = LogSchema::new();
    let index = Index::create_in_ram(schema.schema.clone());
    let mut writer = index
        .writer_with_num_threads(1, 15_000_000)
        .expect("writer");
    for (raw, status) in texts {
        let mut doc = schema.document(None, raw, 0, "h", "s");
        doc.add_u64(schema.status, *status);
        writer.add_document(doc).expect("add");
    }
    writer.commit().expect("commit");
    let range = TimeRange {
        since: -1,
        until: 1,
    };
    let compiled = CompiledQuery::new(&schema, query, range).expect("query parses");
    let searcher = index.reader().expect("reader").searcher();
    let query = compiled.query(&schema).expect("builds");
    searcher.search(&*query, &Count).expect("search")
}

#[test]
fn negations_mean_all_lines_except() {
    let docs = [("curl one", 200), ("curl two", 500), ("wget three", 500)];
    assert_eq!(count_in_ram(&docs, "curl AND NOT status:200"), 1);
    assert_eq!(count_in_ram(&docs, "NOT status:200"), 2);
    assert_eq!(count_in_ram(&docs, "-status:500"), 1);
    assert_eq!(count_in_ram(&docs, "curl AND (NOT status:200)"), 1);
    assert_eq!(count_in_ram(&docs, "wget OR (curl AND NOT status:500)"), 2);
    assert_eq!(count_in_ram(&docs, "curl status:500"), 1);
    assert_eq!(count_in_ram(&docs, "*"), 3);
}

fn too_large(query: &str, limits: &QueryLimits) -> String {
    let schema = LogSchema::new();
    let range = TimeRange { since: 0, until: 1 };
    match CompiledQuery::with_limits(&schema, query, range, limits) {
        Err(SearchError::TooLarge(msg)) => msg,
        Err(e) => panic!("{query:?}: expected a limit refusal, got {e}"),
        Ok(_) => panic!("{query:?}: expected a limit refusal, it parsed"),
    }
}

#[test]
fn oversized_queries_are_refused_naming_the_limit() {
    let limits = QueryLimits::default();
    let long = "a".repeat(limits.max_query_bytes + 1);
    let msg = too_large(&long, &limits);
    assert!(
        msg.contains("limits.query.max_query_bytes") && msg.contains("4096"),
        "{msg}"
    );

    let many = (0..200)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let msg = too_large(&many, &limits);
    assert!(
        msg.contains("limits.query.max_clauses") && msg.contains("200"),
        "{msg}"
    );

    let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
    let msg = too_large(&deep, &limits);
    assert!(msg.contains("limits.query.max_depth"), "{msg}");
    let hidden = format!("\"open {}a{}", "(".repeat(40), ")".repeat(40));
    let msg = too_large(&hidden, &limits);
    assert!(msg.contains("limits.query.max_depth"), "{msg}");
    let negations = format!("{}a", "NOT ".repeat(40));
    let msg = too_large(&negations, &limits);
    assert!(msg.contains("limits.query.max_depth"), "{msg}");

    let patterns = (0..9)
        .map(|i| format!("\"p{i}\"*"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let msg = too_large(&patterns, &limits);
    assert!(msg.contains("limits.query.max_pattern_terms"), "{msg}");

    let msg = too_large(&format!("raw:/a{}/", "b".repeat(300)), &limits);
    assert!(msg.contains("limits.query.max_regex_bytes"), "{msg}");
    let msg = too_large("raw:/.*admin/", &limits);
    assert!(msg.contains("starts with a wildcard"), "{msg}");
    let msg = too_large("\"\"*", &limits);
    assert!(msg.contains("leading wildcard"), "{msg}");

    // Within the limits the same kinds of query are fine.
    let schema = LogSchema::new();
    let range = TimeRange { since: 0, until: 1 };
    for ok in [
        "(a OR b) AND NOT c",
        "adm*",
        "\"admin lo\"*",
        "\"((((\" x",
        "path:/login -status:200",
    ] {
        CompiledQuery::with_limits(&schema, ok, range, &limits)
            .unwrap_or_else(|e| panic!("{ok:?} must pass: {e}"));
    }
}

#[test]
fn result_size_limits_name_the_setting() {
    let limits = QueryLimits::default();
    assert_eq!(limits.check_hits(10_000).ok(), Some(10_000));
    let err = limits.check_hits(50_000).expect_err("above max_hits");
    assert!(err.to_string().contains("limits.query.max_hits"), "{err}");
    let err = limits.check_top(5000).expect_err("above max_top_values");
    assert!(
        err.to_string().contains("limits.query.max_top_values"),
        "{err}"
    );
}

/// `text` built for `schema` over all time.
fn all_time(schema: &LogSchema, text: &str) -> Box<dyn tantivy::query::Query> {
    let range = TimeRange {
        since: -1,
        until: i64::MAX / 2,
    };
    CompiledQuery::new(schema, text, range)
        .and_then(|q| q.query(schema))
        .expect(text)
}

fn ram_index(docs: usize) -> (LogSchema, Index) {
    let schema = LogSchema::new();
    let index = Index::create_in_ram(schema.schema.clone());
    let mut writer = index
        .writer_with_num_threads(1, 15_000_000)
        .expect("writer");
    for i in 0..docs {
        let raw = format!("line {i} curl");
        writer
            .add_document(schema.document(None, &raw, i as i64, "h", "s"))
            .expect("add");
    }
    writer.commit().expect("commit");
    (schema, index)
}

#[test]
fn multi_word_path_and_agent_queries_match_without_positions() {
    let schema = LogSchema::new();
    let index = Index::create_in_ram(schema.schema.clone());
    let mut writer = index
        .writer_with_num_threads(1, 15_000_000)
        .expect("writer");
    let ctx = ParseContext::now();
    let lines = [
        r#"10.0.0.1 - - [10/Oct/2024:12:00:00 +0000] "GET /api/v1/items?id=3 HTTP/1.1" 200 5 "-" "curl/8.4.0""#,
        r#"10.0.0.2 - - [10/Oct/2024:12:00:01 +0000] "GET /items/v1/api HTTP/1.1" 200 5 "-" "Mozilla/5.0 (8.4.0) curl""#,
        r#"10.0.0.3 - - [10/Oct/2024:12:00:02 +0000] "GET /login HTTP/1.1" 200 5 "-" "curl/7.1""#,
    ];
    for (i, raw) in lines.iter().enumerate() {
        let event = parse_line(str::as_bytes(raw), Format::Combined, &ctx).expect("parses");
        writer
            .add_document(schema.document(Some(&event), raw, i as i64, "h", "s"))
            .expect("add");
    }
    writer.commit().expect("commit");
    let searcher = index.reader().expect("reader").searcher();
    let count = |q: &str| searcher.search(&*all_time(&schema, q), &Count).expect(q);
    // The words in that order: not the line with the same words reordered.
    assert_eq!(count("path:/api/v1/items"), 1);
    assert_eq!(count("user_agent:curl/8.4.0"), 1);
    assert_eq!(count("user_agent:\"curl/8.4.0\""), 1);
    assert_eq!(count("NOT path:/api/v1/items"), 2);
    assert_eq!(count("path:login"), 1);
    assert_eq!(count("user_agent:curl"), 3);
}

#[test]
fn deadlined_collector_counts_like_tantivy_within_budget() {
    let (schema, index) = ram_index(10_000);
    let searcher = index.reader().expect("reader").searcher();
    let query = all_time(&schema, "curl");
    let budget = Budget::new(QueryLimits::default());
    let plain = searcher.search(&*query, &Count).expect("plain");
    let bounded = searcher
        .search(&*query, &Deadlined::new(Count, &budget))
        .expect("within budget");
    assert_eq!((plain, bounded), (10_000, 10_000));
    // A scoring collector goes through the per-document path.
    let top = searcher
        .search(
            &*query,
            &Deadlined::new(TopDocs::with_limit(3).order_by_score(), &budget),
        )
        .expect("top by score");
    assert_eq!(top.len(), 3);
}

#[test]
fn expired_deadline_answers_timeout_naming_the_limit() {
    let (schema, index) = ram_index(100);
    let searcher = index.reader().expect("reader").searcher();
    let query = all_time(&schema, "*");
    let budget = Budget::expired(QueryLimits::default());
    let err = searcher
        .search(&*query, &Deadlined::new(Count, &budget))
        .map_err(|e| budget.explain(e))
        .expect_err("past the deadline");
    assert!(
        matches!(err, SearchError::Timeout { limit_ms: 10_000 }),
        "{err}"
    );
    assert!(err.to_string().contains("limits.query.timeout_ms"), "{err}");
}

/// Counts, and drops the cancel guard after `cancel_at` documents: a
/// client hanging up in the middle of a segment.
struct HangUp {
    cancel_at: usize,
    guard: std::sync::Mutex<Option<CancelOnDrop>>,
    seen: Arc<std::sync::atomic::AtomicUsize>,
}

struct HangUpSegment {
    cancel_at: usize,
    guard: Option<CancelOnDrop>,
    seen: Arc<std::sync::atomic::AtomicUsize>,
}

impl Collector for HangUp {
    type Fruit = ();
    type Child = HangUpSegment;
    fn for_segment(&self, _: u32, _: &SegmentReader) -> tantivy::Result<HangUpSegment> {
        Ok(HangUpSegment {
            cancel_at: self.cancel_at,
            guard: self.guard.lock().expect("lock").take(),
            seen: Arc::clone(&self.seen),
        })
    }
    fn requires_scoring(&self) -> bool {
        false
    }
    fn merge_fruits(&self, _: Vec<()>) -> tantivy::Result<()> {
        Ok(())
    }
}

impl SegmentCollector for HangUpSegment {
    type Fruit = ();
    fn collect(&mut self, _: DocId, _: tantivy::Score) {
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.cancel_at {
            self.guard.take();
        }
    }
    fn harvest(self) {}
}

#[test]
fn search_stops_inside_a_segment_when_cancelled() {
    let docs = 4 * DOCS_PER_CHECK;
    let (schema, index) = ram_index(docs);
    let searcher = index.reader().expect("reader").searcher();
    assert_eq!(searcher.segment_readers().len(), 1, "one segment");
    let query = all_time(&schema, "*");
    let budget = Budget::new(QueryLimits::default());
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let collector = HangUp {
        cancel_at: 100,
        guard: std::sync::Mutex::new(Some(budget.cancel_on_drop())),
        seen: Arc::clone(&seen),
    };
    let err = searcher
        .search(&*query, &Deadlined::new(collector, &budget))
        .map_err(|e| budget.explain(e))
        .expect_err("cancelled mid-segment");
    assert!(matches!(err, SearchError::Cancelled), "{err}");
    let seen = seen.load(Ordering::Relaxed);
    assert!(
        seen < docs,
        "stopped at the next check ({seen} of {docs} documents read)"
    );
}

#[test]
fn syntax_errors_name_the_problem() {
    let schema = LogSchema::new();
    let range = TimeRange { since: 0, until: 1 };
    for bad in ["status:(", "nosuchfield:x"] {
        match CompiledQuery::new(&schema, bad, range) {
            Err(SearchError::BadQuery(msg)) => assert!(!msg.is_empty(), "{bad}"),
            _ => panic!("{bad} must be a bad query"),
        }
    }
    for (bad, says) in [
        (r#""unbalanced"#, "quote at column 1 is never closed"),
        (
            "status:[500 TO",
            "'[' at column 8 is never closed: a range reads",
        ),
        ("(status:500", "'(' at column 1 is never closed"),
        ("status:500)", "')' at column 11 closes nothing"),
        (
            "(status:[500 TO 599)",
            "')' at column 20 does not close the '['",
        ),
    ] {
        match CompiledQuery::new(&schema, bad, range) {
            Err(SearchError::BadQuery(msg)) => assert!(msg.contains(says), "{bad}: {msg}"),
            _ => panic!("{bad} must be a bad query"),
        }
    }
}

#[test]
fn lowercase_and_symbol_operators_are_operators() {
    let index = Indexed::new([
        (
            "h",
            "s",
            r#"203.0.113.1 - - [10/Oct/2024:12:00:00 +0000] "GET /a HTTP/1.1" 500 1 "-" "x""#,
        ),
        (
            "h",
            "s",
            r#"203.0.113.2 - - [10/Oct/2024:12:00:00 +0000] "POST /a HTTP/1.1" 502 1 "-" "x""#,
        ),
        (
            "h",
            "s",
            r#"203.0.113.3 - - [10/Oct/2024:12:00:00 +0000] "GET /b?q=cats%20or%20dogs HTTP/1.1" 200 1 "-" "x""#,
        ),
    ]);
    for (query, want) in [
        ("status:500 or status:502", 2),
        ("status:500 || status:502", 2),
        ("status:[500 TO 599] and method:GET", 1),
        ("status:[500 TO 599] && method:GET", 1),
        ("status:[500 TO 599] and not method:GET", 1),
        ("not status:500", 2),
        // Quoted, it is the word.
        ("\"or\"", 1),
        ("path:\"cats or dogs\"", 1),
    ] {
        assert_eq!(index.count(query), Ok(want), "{query}");
    }
}

/// A day partition of tenant `t` holding `lines` as (host, source, line),
/// parsed as the indexer parses them; counts queries over that day.
struct Indexed {
    _dir: tempfile::TempDir,
    catalog: Arc<Catalog>,
    range: TimeRange,
}

impl Indexed {
    fn new<'a>(lines: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> Indexed {
        let ctx = ParseContext::now();
        Indexed::of(|schema, at| {
            lines
                .into_iter()
                .map(|(host, source, line)| {
                    let event = parse_line(line.as_bytes(), Format::Auto, &ctx).ok();
                    schema.document(event.as_ref(), line, at, host, source)
                })
                .collect()
        })
    }

    /// The documents `docs` builds for the day (given its schema and an
    /// instant in it).
    fn of(docs: impl FnOnce(&LogSchema, i64) -> Vec<TantivyDocument>) -> Indexed {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(dir.path()).expect("catalog");
        let day = 20_000;
        let partition = catalog.get_or_create("t", day, 0).expect("partition");
        let mut writer = partition
            .index
            .writer::<TantivyDocument>(15_000_000)
            .expect("writer");
        for doc in docs(&catalog.schema, day * NANOS_PER_DAY + 1) {
            writer.add_document(doc).expect("adds");
        }
        writer.commit().expect("commits");
        partition.reader.reload().expect("reloads");
        let range = TimeRange {
            since: day * NANOS_PER_DAY,
            until: (day + 1) * NANOS_PER_DAY,
        };
        Indexed {
            _dir: dir,
            catalog,
            range,
        }
    }

    fn count(&self, query: &str) -> Result<u64, String> {
        count(&self.catalog, "t", query, self.range).map_err(|e| format!("{query}: {e:?}"))
    }
}

#[test]
fn keyword_wildcards_and_exists_queries_answer_on_every_field() {
    let index = Indexed::new([
        (
            "web-1",
            "/var/log/shop/access.log",
            r#"203.0.113.9 - - [24/Nov/2026:10:00:01 +0000] "GET /a HTTP/1.1" 200 12 "https://r.example/" "curl/8""#,
        ),
        (
            "Web-2",
            "/var/log/shop/access.log",
            r#"203.0.113.9 - - [24/Nov/2026:10:00:01 +0000] "GET /b HTTP/1.1" 200 12 "-" "curl/8""#,
        ),
        (
            "api-1",
            "/var/log/blog/access.log",
            "a line that is not an access log",
        ),
    ]);
    let n = |q: &str| index.count(q);
    assert!(
        n("rest:*").is_err_and(|e| e.contains("does not exist")),
        "rest is internal"
    );
    for (query, expected) in [
        ("path:*", 2),
        ("referer:*", 1),
        ("raw:*", 3),
        ("user_agent:*", 2),
        ("host:web-*", 2),
        ("host:WEB-1", 1),
        ("host:*-1", 2),
        ("source:*shop*", 2),
        ("source:/var/log/shop/*", 2),
        (r#"source:"/var/log/blog/access.log""#, 1),
        ("NOT path:*", 1),
        ("host: IN [WEB-1 api-1]", 2),
    ] {
        assert_eq!(n(query), Ok(expected), "{query}");
    }
}

#[test]
fn words_of_an_escaped_target_are_found_as_the_server_read_them() {
    let index = Indexed::new(
        [
            r#"203.0.113.9 - - [24/Nov/2026:10:00:01 +0000] "GET /item?id=1%20UNION%20SELECT%20password%20FROM%20users HTTP/1.1" 200 12 "-" "sqlmap""#,
            r#"203.0.113.9 - - [24/Nov/2026:10:00:02 +0000] "GET /view?f=%252e%252e%252fetc%252fshadow HTTP/1.1" 404 12 "-" "curl/8""#,
            r#"198.51.100.4 - - [24/Nov/2026:10:00:03 +0000] "GET /union/select HTTP/1.1" 200 12 "-" "curl/8""#,
        ]
        .map(|line| ("h", "s", line)),
    );
    for (query, expected) in [
        ("union", 2),
        ("path:union", 2),
        ("shadow", 1),
        ("path:shadow", 1),
        (r#""union select password""#, 1),
        (r#"path:"union select password""#, 1),
        (r#""select union""#, 0),
        // The text as written is still found.
        ("20union", 1),
        ("252fshadow", 1),
    ] {
        assert_eq!(index.count(query), Ok(expected), "{query}");
    }
}

#[test]
fn the_wordpress_brute_force_evidence_finds_its_lines() {
    let line = |ip: &str, method: &str, path: &str, status: u16| {
        format!(
            r#"{ip} - - [24/Nov/2026:10:00:01 +0000] "{method} {path} HTTP/1.1" {status} 12 "-" "curl/8""#
        )
    };
    let lines = [
        line("203.0.113.9", "POST", "/wp-login.php", 200),
        line("203.0.113.9", "POST", "/login", 401),
        line("203.0.113.9", "GET", "/wp-login.php", 200),
        line("198.51.100.4", "POST", "/wp-login.php", 200),
    ];
    let index = Indexed::new(lines.iter().map(|l| ("h", "s", l.as_str())));
    let query = r#"client_ip:203.0.113.9 AND (status:[401 TO 403] OR (method:POST AND status:200 AND path:"/wp-login.php"))"#;
    assert_eq!(index.count(query), Ok(2));
}
