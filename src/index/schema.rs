//! The tantivy schema of a log line, and the Event → document mapping.
//!
//! Two layouts exist on disk (docs/index-size.md has the measurements):
//!
//! - [`Layout::V1`], partitions written before the size work: `raw` is
//!   indexed with positions and stored; `path`, `referer`, `user_agent`
//!   are indexed again as words; `timestamp`, `host`, `source` are stored.
//! - [`Layout::V2`], every partition created since: each word of a line is
//!   indexed once and without positions. `path` and `referer` keep their
//!   words, `user_agent` is one keyword (an agent string repeats on many
//!   lines: one term per line instead of fifteen), and `rest` holds the
//!   words of the line outside those three. Only `raw` is stored; time,
//!   host and source are read from their fast fields. Phrases are checked
//!   against the stored line (`query.rs`), as Elasticsearch does for
//!   `match_only_text`.
//! - [`Layout::V3`], every partition created since: V2, and the words of
//!   the time, the status and the size leave `rest` when the fast fields
//!   render them exactly (`derived.rs`); the `derived` fast field says
//!   which did, and a word query asks those fast fields too. A fifth of
//!   tantivy's indexing time was these words.
//!
//! Every parsed field can be derived again from `raw`, so no parsed value
//! is stored. Fields that are aggregated or sorted on are fast fields.

use std::net::IpAddr;

use anyhow::{Context, Result};
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, IpAddrOptions, NumericOptions,
    Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{DateTime, TantivyDocument};

use super::derived;
use crate::parse::unescape::unescaped_target;
use crate::parse::Event;

/// Which schema a partition was created with (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    V1,
    V2,
    V3,
}

impl Layout {
    /// Whether the words of a line are split between `rest`, `path`,
    /// `referer` and `user_agent` (V2 and later), not all in `raw`.
    pub fn split_words(self) -> bool {
        self != Layout::V1
    }
}

/// Field handles of one layout, resolved once.
#[derive(Clone, Debug)]
pub struct LogSchema {
    pub schema: Schema,
    pub layout: Layout,
    pub timestamp: Field,
    pub host: Field,
    pub source: Field,
    pub format: Field,
    pub client_ip: Field,
    pub user: Field,
    pub method: Field,
    pub path: Field,
    pub status: Field,
    pub bytes: Field,
    pub referer: Field,
    pub user_agent: Field,
    pub duration: Field,
    pub app: Field,
    /// The line as received; stored in both layouts, indexed in V1.
    pub raw: Field,
    /// V2: the words of the line outside `path`, `referer`, `user_agent`.
    pub rest: Option<Field>,
    /// The line's pattern id (`src/patterns/`). `None` in V1 partitions
    /// created before it existed (it was the last field added to V1).
    pub pattern: Option<Field>,
    /// The Kafka offset of the record the line came in, on a Kafka shard
    /// (empty on the collector), a fast field: a shard that lost a
    /// partition's commit interval to another indexer deletes its copy by
    /// range (docs/kafka.md, "Exactly once"). `None` in partitions created
    /// before it existed (the last field added).
    pub log_position: Option<Field>,
    /// V3: which values' words left `rest` for the fast fields
    /// (`derived.rs`).
    pub derived: Option<Field>,
}

/// Field names users may aggregate on with `top` (fast fields in every
/// layout; `path` and `user_agent` are answered by `search::top_values`
/// from the stored lines where they are not).
pub const TOP_FIELDS: &[&str] = &[
    "host",
    "source",
    "format",
    "client_ip",
    "user",
    "method",
    "status",
    "app",
    "path",
    "user_agent",
];

/// Exact values, matched as one term (`pattern:0123456789ab`).
fn keyword_indexed() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("raw")
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    )
}

/// A keyword that is also a fast field, to aggregate on (`host:web-1`).
fn keyword() -> TextOptions {
    keyword_indexed().set_fast("raw")
}

/// Words, for doc ids only: no frequencies, no positions, no norms (hits
/// are ordered by time, never by relevance).
fn words() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("default")
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    )
}

impl LogSchema {
    /// The layout of new partitions.
    pub fn new() -> Self {
        let mut b = Schema::builder();
        b.add_date_field(
            "timestamp",
            DateOptions::default()
                .set_fast()
                .set_precision(DateTimePrecision::Milliseconds),
        );
        for name in ["host", "source", "format", "user", "method", "app"] {
            b.add_text_field(name, keyword());
        }
        b.add_ip_addr_field("client_ip", IpAddrOptions::default().set_fast());
        b.add_text_field("path", words());
        b.add_text_field("referer", words());
        b.add_text_field("user_agent", keyword());
        b.add_u64_field("status", NumericOptions::default().set_indexed().set_fast());
        b.add_u64_field("bytes", NumericOptions::default().set_fast());
        b.add_f64_field("duration", NumericOptions::default().set_fast());
        b.add_text_field("raw", TextOptions::default().set_stored());
        b.add_text_field("rest", words());
        b.add_text_field("pattern", keyword_indexed());
        // Not indexed: a range query on a fast field scans the column, and
        // a record's lines share one value, so it costs a few bits a line.
        b.add_u64_field("log_position", NumericOptions::default().set_fast());
        // Nearly every line has the same flags: bitpacked to almost nothing.
        b.add_u64_field("derived", NumericOptions::default().set_fast());
        Self::from_schema(b.build()).unwrap_or_else(|e| unreachable!("the V3 schema: {e:#}"))
    }

    /// The layout partitions had before V3, for reading them (and tests).
    pub fn v2() -> Self {
        let mut b = Schema::builder();
        for (_, entry) in Self::new().schema.fields() {
            if entry.name() != "derived" {
                b.add_field(entry.clone());
            }
        }
        Self::from_schema(b.build()).unwrap_or_else(|e| unreachable!("the V2 schema: {e:#}"))
    }

    /// The layout partitions had before V2, for reading them (and tests).
    pub fn v1() -> Self {
        let mut b = Schema::builder();
        b.add_date_field(
            "timestamp",
            DateOptions::default()
                .set_indexed()
                .set_stored()
                .set_fast()
                .set_precision(DateTimePrecision::Milliseconds),
        );
        b.add_text_field("host", keyword().set_stored());
        b.add_text_field("source", keyword().set_stored());
        b.add_text_field("format", keyword());
        b.add_ip_addr_field(
            "client_ip",
            IpAddrOptions::default().set_indexed().set_fast(),
        );
        b.add_text_field("user", keyword());
        b.add_text_field("method", keyword());
        b.add_text_field("app", keyword());
        b.add_text_field("path", words());
        b.add_text_field("referer", words());
        b.add_text_field("user_agent", words());
        let numeric = NumericOptions::default().set_indexed().set_fast();
        b.add_u64_field("status", numeric.clone());
        b.add_u64_field("bytes", numeric.clone());
        b.add_f64_field("duration", numeric);
        b.add_text_field(
            "raw",
            TextOptions::default()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("default")
                        .set_index_option(IndexRecordOption::WithFreqsAndPositions)
                        .set_fieldnorms(false),
                )
                .set_stored(),
        );
        b.add_text_field("pattern", keyword());
        Self::from_schema(b.build()).unwrap_or_else(|e| unreachable!("the V1 schema: {e:#}"))
    }

    /// The handles of an index on disk, whichever layout it has.
    pub fn from_schema(schema: Schema) -> Result<Self> {
        let field = |name: &str| {
            schema
                .get_field(name)
                .with_context(|| format!("the index has no field {name:?}"))
        };
        let rest = schema.get_field("rest").ok();
        let derived = schema.get_field("derived").ok();
        Ok(LogSchema {
            layout: match (rest, derived) {
                (Some(_), Some(_)) => Layout::V3,
                (Some(_), None) => Layout::V2,
                (None, _) => Layout::V1,
            },
            timestamp: field("timestamp")?,
            host: field("host")?,
            source: field("source")?,
            format: field("format")?,
            client_ip: field("client_ip")?,
            user: field("user")?,
            method: field("method")?,
            path: field("path")?,
            status: field("status")?,
            bytes: field("bytes")?,
            referer: field("referer")?,
            user_agent: field("user_agent")?,
            duration: field("duration")?,
            app: field("app")?,
            raw: field("raw")?,
            rest,
            pattern: schema.get_field("pattern").ok(),
            log_position: schema.get_field("log_position").ok(),
            derived,
            schema,
        })
    }

    /// Builds the document of one line. `host`/`source` come from the
    /// shipper when the line itself does not name a host.
    pub fn document(
        &self,
        event: Option<&Event<'_>>,
        raw: &str,
        timestamp_nanos: i64,
        host: &str,
        source: &str,
    ) -> TantivyDocument {
        // What the document's values take, near enough that it is not
        // reallocated (tantivy's default is 1 KiB, twice a typical line's).
        let mut doc =
            TantivyDocument::with_capacity(2 * raw.len() + host.len() + source.len() + 128);
        doc.add_date(
            self.timestamp,
            DateTime::from_timestamp_nanos(timestamp_nanos),
        );
        let event_host = event
            .and_then(|e| e.host.as_deref())
            .filter(|h| !h.is_empty());
        let host = event_host.unwrap_or(host);
        if !host.is_empty() {
            doc.add_text(self.host, host);
        }
        if !source.is_empty() {
            doc.add_text(self.source, source);
        }
        doc.add_text(self.raw, raw);
        let Some(e) = event else {
            if let Some(rest) = self.rest {
                doc.add_text(rest, raw);
            }
            doc.add_text(self.format, "raw");
            return doc;
        };
        if let Some(rest) = self.rest {
            let values = self.derived.map(|_| derived::Values {
                // What the timestamp field keeps: milliseconds.
                timestamp_millis: Some(
                    DateTime::from_timestamp_nanos(timestamp_nanos)
                        .truncate(DateTimePrecision::Milliseconds)
                        .into_timestamp_millis(),
                ),
                status: e.status.map(u64::from),
                bytes: e.bytes,
                protocol: e.protocol.as_deref().map_or(0, derived::protocol_flag),
            });
            REST.with_borrow_mut(|(words, spans)| {
                let flags = rest_of_line(raw, e, values.as_ref(), spans, words);
                if let (Some(derived), true) = (self.derived, flags != 0) {
                    doc.add_u64(derived, flags);
                }
                doc.add_text(rest, words.as_str());
            });
        }
        doc.add_text(self.format, e.format.as_str());
        if let Some(ip) = e.client_ip {
            doc.add_ip_addr(self.client_ip, stored_ip(ip));
        }
        let texts = [
            (self.user, &e.user),
            (self.method, &e.method),
            (self.path, &e.path),
            (self.referer, &e.referer),
            (self.user_agent, &e.user_agent),
            (self.app, &e.app),
        ];
        for (field, value) in texts {
            if let Some(v) = value {
                doc.add_text(field, v);
            }
        }
        // An escaped target's words as the server read them (`%20UNION`
        // is `union`): a second value of `path`, so a word query finds it.
        if let Some(decoded) = e.path.as_deref().and_then(unescaped_target) {
            doc.add_text(self.path, &decoded);
        }
        if let Some(status) = e.status {
            doc.add_u64(self.status, u64::from(status));
        }
        if let Some(bytes) = e.bytes {
            doc.add_u64(self.bytes, bytes);
        }
        if let Some(duration) = e.duration {
            doc.add_f64(self.duration, duration);
        }
        doc
    }
}

impl Default for LogSchema {
    fn default() -> Self {
        Self::new()
    }
}

/// How `client_ip` stores an address: IPv4 mapped into IPv6.
pub fn stored_ip(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

thread_local! {
    /// [`rest_of_line`]'s text and cut spans, kept per indexing thread:
    /// every access line needs both, and a fresh pair per line was two
    /// allocations (and, returned at once, page faults).
    static REST: std::cell::RefCell<(String, Vec<(usize, usize)>)> =
        const { std::cell::RefCell::new((String::new(), Vec::new())) };
}

/// Writes into `rest` the line `raw` with the path, referer, user agent
/// and method cut out, where each is a slice of the line between two word
/// boundaries: then the words of the line are exactly the words of this
/// plus those of the four fields, and a word query asks them all
/// (`query.rs`). A value that is not such a slice (unescaped JSON, say)
/// stays in, which only indexes it twice. With `values` (layout V3), the
/// values `derived.rs` renders are cut too; the returned flags say which.
/// `spans` is scratch.
fn rest_of_line(
    raw: &str,
    event: &Event<'_>,
    values: Option<&derived::Values>,
    spans: &mut Vec<(usize, usize)>,
    rest: &mut String,
) -> u64 {
    spans.clear();
    let path = event.path.as_deref().and_then(|path| span_of(raw, path));
    spans.extend(path);
    spans.extend(
        [&event.referer, &event.user_agent, &event.method]
            .into_iter()
            .filter_map(|v| v.as_deref().and_then(|v| span_of(raw, v))),
    );
    let request_end = path.map_or(0, |(_, end)| end);
    let flags = values.map_or(0, |values| derived::find(raw, values, spans, request_end));
    spans.sort_unstable();
    rest.clear();
    let mut at = 0;
    for &(start, end) in spans.iter() {
        if start < at {
            continue; // overlapping values: keep the first cut only
        }
        rest.push_str(&raw[at..start]);
        rest.push(' ');
        at = end;
    }
    rest.push_str(&raw[at..]);
    flags
}

/// Where `value` lies in `raw`, if it is a slice of it bounded on both
/// sides by a character the `default` tokenizer splits on.
fn span_of(raw: &str, value: &str) -> Option<(usize, usize)> {
    let start = (value.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
    let end = start.checked_add(value.len())?;
    if value.is_empty() || end > raw.len() || !raw.is_char_boundary(start) {
        return None;
    }
    let before = raw[..start].chars().next_back();
    let after = raw[end..].chars().next();
    let splits = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
    (splits(before) && splits(after)).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_line, Format, ParseContext};
    use tantivy::tokenizer::TokenizerManager;

    fn words_of(text: &str) -> Vec<String> {
        let mut tokenizer = TokenizerManager::default()
            .get("default")
            .expect("default tokenizer");
        let mut stream = tokenizer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out.sort();
        out
    }

    #[test]
    fn the_rest_plus_the_cut_fields_has_every_word_of_the_line() {
        let ctx = ParseContext::now();
        for line in [
            r#"10.0.0.1 - - [10/Oct/2024:12:00:00 +0000] "GET /api/v1/items?id=3 HTTP/1.1" 200 5 "https://example.com/x" "curl/8.4.0""#,
            r#"10.0.0.1 - bob [10/Oct/2024:12:00:00 +0000] "POST /login HTTP/1.1" 401 5 "-" "Mozilla/5.0 (X11; Linux x86_64)" rt=0.2"#,
            r#"{"remote_addr":"10.0.0.2","request":"GET /a\/b HTTP/1.1","status":200,"http_user_agent":"Go-http-client/1.1"}"#,
        ] {
            let event = parse_line(line.as_bytes(), Format::Auto, &ctx).expect("parses");
            let mut rest = String::new();
            rest_of_line(line, &event, None, &mut Vec::new(), &mut rest);
            assert!(rest.len() < line.len(), "something was cut: {rest}");
            let mut pieces = words_of(&rest);
            for v in [
                &event.path,
                &event.referer,
                &event.user_agent,
                &event.method,
            ]
            .into_iter()
            .flatten()
            {
                pieces.extend(words_of(v));
            }
            // A JSON request is unescaped into a value of its own: its
            // method is no slice of the line and stays.
            if !line.starts_with('{') {
                let method = event.method.as_deref().expect("a method").to_lowercase();
                assert!(
                    !words_of(&rest).contains(&method),
                    "the method left: {rest}"
                );
            }
            // A value left in (the unescaped JSON path) is there twice.
            pieces.sort();
            pieces.dedup();
            let mut all = words_of(line);
            all.dedup();
            assert_eq!(pieces, all, "{line}");
        }
    }

    #[test]
    fn a_value_glued_to_a_word_is_not_cut() {
        let raw = "abc/path def";
        assert_eq!(span_of(raw, &raw[3..8]), None, "preceded by a letter");
        assert_eq!(span_of(raw, &raw[4..8]), Some((4, 8)));
        assert_eq!(span_of(raw, "path"), None, "not a slice of the line");
    }

    #[test]
    fn layouts_are_told_apart_by_their_fields() {
        assert_eq!(LogSchema::new().layout, Layout::V3);
        assert_eq!(LogSchema::v2().layout, Layout::V2);
        let v1 = LogSchema::v1();
        assert_eq!(v1.layout, Layout::V1);
        let again = LogSchema::from_schema(v1.schema.clone()).expect("v1");
        assert_eq!((again.layout, again.raw), (Layout::V1, v1.raw));
        assert!(again.pattern.is_some() && again.rest.is_none());
        assert!(again.log_position.is_none(), "V1 never had it");
        assert!(LogSchema::new().log_position.is_some());
    }
}
