//! The tantivy schema of a log line, and the Event → document mapping.
//!
//! Only `timestamp`, `host`, `source` and `raw` are stored: every parsed
//! field can be derived again from `raw`, so storing it twice would only
//! grow the index. Fields that are aggregated or sorted on are fast fields.

use std::net::IpAddr;

use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, IpAddrOptions, NumericOptions,
    Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{DateTime, TantivyDocument};

use crate::parse::Event;

/// Field handles, resolved once.
#[derive(Clone, Debug)]
pub struct LogSchema {
    pub schema: Schema,
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
    pub raw: Field,
    /// The line's pattern id (`src/patterns/`). Last in the schema: an
    /// index created before it existed keeps every other field's id, and
    /// holds no `pattern` (see [`has_pattern`]).
    pub pattern: Field,
}

/// Whether an index on disk has the `pattern` field: partitions created
/// before it was added do not, and get no value for it.
pub fn has_pattern(schema: &Schema) -> bool {
    schema.get_field("pattern").is_ok()
}

/// Field names users may aggregate on with `top`.
pub const TOP_FIELDS: &[&str] = &[
    "host",
    "source",
    "format",
    "client_ip",
    "user",
    "method",
    "status",
    "app",
];

impl LogSchema {
    pub fn new() -> Self {
        // No fieldnorms anywhere: hits are ordered by time, never by BM25,
        // and norms would cost a byte per field per line.
        let mut b = Schema::builder();
        let timestamp = b.add_date_field(
            "timestamp",
            DateOptions::default()
                .set_indexed()
                .set_stored()
                .set_fast()
                .set_precision(DateTimePrecision::Milliseconds),
        );
        let keyword_indexing = TextFieldIndexing::default()
            .set_tokenizer("raw")
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false);
        let keyword = TextOptions::default()
            .set_indexing_options(keyword_indexing)
            .set_fast("raw");
        let host = b.add_text_field("host", keyword.clone().set_stored());
        let source = b.add_text_field("source", keyword.clone().set_stored());
        let format = b.add_text_field("format", keyword.clone());
        let client_ip = b.add_ip_addr_field(
            "client_ip",
            IpAddrOptions::default().set_indexed().set_fast(),
        );
        let user = b.add_text_field("user", keyword.clone());
        let method = b.add_text_field("method", keyword.clone());
        let app = b.add_text_field("app", keyword.clone());
        // Field-scoped words (`path:login`) only need doc ids; phrases are
        // answered by `raw`, which keeps positions.
        let field_words = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        );
        let path = b.add_text_field("path", field_words.clone());
        let referer = b.add_text_field("referer", field_words.clone());
        let user_agent = b.add_text_field("user_agent", field_words);
        let numeric = NumericOptions::default().set_indexed().set_fast();
        let status = b.add_u64_field("status", numeric.clone());
        let bytes = b.add_u64_field("bytes", numeric.clone());
        let duration = b.add_f64_field("duration", numeric);
        let raw = b.add_text_field(
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
        let pattern = b.add_text_field("pattern", keyword);
        LogSchema {
            schema: b.build(),
            timestamp,
            host,
            source,
            format,
            client_ip,
            user,
            method,
            path,
            status,
            bytes,
            referer,
            user_agent,
            duration,
            app,
            raw,
            pattern,
        }
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
        let mut doc = TantivyDocument::new();
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
            doc.add_text(self.format, "raw");
            return doc;
        };
        doc.add_text(self.format, e.format.as_str());
        if let Some(ip) = e.client_ip {
            let v6 = match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            doc.add_ip_addr(self.client_ip, v6);
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
