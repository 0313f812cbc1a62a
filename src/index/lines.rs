//! Reading a line back: `raw` from the doc store, everything else the
//! shipper attached (time, host, source, format) from fast fields, which
//! both layouts have (`schema.rs`): storing them again per line would
//! only grow the doc store.

use anyhow::{Context, Result};
use tantivy::columnar::StrColumn;
use tantivy::schema::Value;
use tantivy::{DocId, SegmentReader, TantivyDocument};

use super::schema::LogSchema;
use crate::parse::Format;

/// A segment's string columns of the per-line metadata.
pub struct Columns {
    host: Option<StrColumn>,
    source: Option<StrColumn>,
    format: Option<StrColumn>,
}

impl Columns {
    pub fn open(segment: &SegmentReader) -> Result<Columns> {
        let fast = segment.fast_fields();
        let column = |name: &str| {
            fast.str(name)
                .with_context(|| format!("reading the {name} column"))
        };
        Ok(Columns {
            host: column("host")?,
            source: column("source")?,
            format: column("format")?,
        })
    }

    pub fn host(&self, doc: DocId) -> Option<String> {
        first(self.host.as_ref(), doc)
    }

    pub fn source(&self, doc: DocId) -> Option<String> {
        first(self.source.as_ref(), doc)
    }

    /// The parser that read the line when it was indexed (`raw` when none).
    pub fn format(&self, doc: DocId) -> Option<String> {
        first(self.format.as_ref(), doc)
    }
}

fn first(column: Option<&StrColumn>, doc: DocId) -> Option<String> {
    let column = column?;
    let ord = column.term_ords(doc).next()?;
    let mut out = String::new();
    match column.ord_to_str(ord, &mut out) {
        Ok(true) => Some(out),
        _ => None,
    }
}

/// The parser that read a line when it was indexed (its `format` value),
/// to read it again the same way; `None` for a line no parser read.
pub fn parser_of(format: Option<&str>) -> Option<Format> {
    format
        .and_then(|f| f.parse::<Format>().ok())
        .filter(|f| *f != Format::Raw)
}

/// The stored line of a document.
pub fn raw<'a>(schema: &LogSchema, doc: &'a TantivyDocument) -> Option<&'a str> {
    doc.get_first(schema.raw).and_then(|v| v.as_str())
}
