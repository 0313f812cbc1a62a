//! Words of a line that the index answers from its fast fields instead of
//! its postings (partitions of layout V3, `schema.rs`).
//!
//! An access line spends many of its words on values the document already
//! holds as fast fields: the time (seven words: `10/Oct/2024:12:00:00
//! +0000`), the status and the size. Indexing them again as words of
//! `rest` was a fifth of tantivy's indexing time on the acceptance file
//! (docs/ingest-profile.md). In V3 such a value is rendered from what its
//! fast field stores, the way the common log format writes it
//! (`10/Oct/2024:12:00:00 +0000`, `404`, `5120`);
//! where the line has that text as a whole (not inside a longer word),
//! it leaves `rest`, and the document's `derived` fast field says which
//! values left. A word query then also asks the fast fields
//! ([`DerivedWord`]).
//!
//! Correct by construction, whatever the line looks like: the text cut
//! is the rendered text, so the words of the line are exactly the words
//! left in `rest` (and `path`, `referer`, `user_agent`) plus the words of
//! the rendered texts of the flagged values. A value written another way
//! (a local time zone, JSON's `2024-10-10T12:00:02Z`)
//! stays in `rest`, as before.

use std::fmt;
use std::sync::Arc;

use tantivy::columnar::Column;
use tantivy::query::{BitSetDocSet, ConstScorer};
use tantivy::query::{EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::schema::Field;
use tantivy::{BitSet, DateTime, DocId, DocSet, Score, SegmentReader};

use crate::parse::civil_from_days;

// Bit 1 is free. The client address stays in `rest`: its four words are
// what a user searching for an address asks the index for, and scanning
// the address column for an octet was far slower than their postings.
/// `dd`, `mon`, `yyyy`, `HH`, `MM`, `SS` in UTC, and `0000` (`+0000`).
const TIME: u64 = 2;
const STATUS: u64 = 4;
const BYTES: u64 = 8;
/// The request's protocol, one bit per version (its text is the flag's,
/// no fast field holds it): three words on nearly every access line.
const PROTOCOLS: [(u64, &str); 5] = [
    (16, "HTTP/1.1"),
    (32, "HTTP/1.0"),
    (64, "HTTP/2.0"),
    (128, "HTTP/2"),
    (256, "HTTP/3"),
];
const PROTOCOL: u64 = 16 | 32 | 64 | 128 | 256;
const ALL: u64 = TIME | STATUS | BYTES | PROTOCOL;

/// The flag of a request protocol written as [`PROTOCOLS`] has it, or 0.
pub fn protocol_flag(protocol: &str) -> u64 {
    PROTOCOLS
        .iter()
        .find(|(_, text)| *text == protocol)
        .map_or(0, |(flag, _)| *flag)
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// The values a document's derived words are rendered from: exactly what
/// its fast fields hold, so indexing and search render the same words.
#[derive(Clone, Copy, Debug, Default)]
pub struct Values {
    /// `timestamp` as stored: milliseconds.
    pub timestamp_millis: Option<i64>,
    pub status: Option<u64>,
    pub bytes: Option<u64>,
    /// The flag of the request's protocol ([`protocol_flag`]), 0 without.
    pub protocol: u64,
}

/// One value's text, as an access log writes it (at most 26 bytes:
/// `dd/Mon/yyyy:HH:MM:SS +0000`).
#[derive(Clone, Copy)]
struct Rendered {
    flag: u64,
    text: [u8; 26],
    len: u8,
}

impl Rendered {
    fn new(flag: u64) -> Self {
        Rendered {
            flag,
            text: [0; 26],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.text[..usize::from(self.len)]
    }

    fn push(&mut self, byte: u8) {
        self.text[usize::from(self.len)] = byte;
        self.len += 1;
    }

    fn decimal(&mut self, mut value: u64, min_digits: usize) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        while value > 0 || digits.len() - at < min_digits.max(1) {
            at -= 1;
            digits[at] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        for &d in &digits[at..] {
            self.push(d);
        }
    }

    /// The words of the text as the `default` tokenizer makes them, but
    /// not lowercased (the month is `Oct`).
    fn words(&self) -> impl Iterator<Item = &[u8]> {
        let text = self.as_bytes();
        ascii_words(text).map(move |(start, end)| &text[start..end])
    }
}

/// The texts of the values of `wanted` that `values` has, at most four.
fn render(values: &Values, wanted: u64) -> ([Rendered; 4], usize) {
    let mut out = [Rendered::new(0); 4];
    let mut n = 0;
    if wanted & TIME != 0 {
        if let Some(time) = values.timestamp_millis.and_then(clf_time) {
            out[n] = time;
            n += 1;
        }
    }
    for (flag, value) in [(STATUS, values.status), (BYTES, values.bytes)] {
        if let (true, Some(value)) = (wanted & flag != 0, value) {
            out[n] = Rendered::new(flag);
            out[n].decimal(value, 1);
            n += 1;
        }
    }
    if let Some((flag, text)) = PROTOCOLS
        .iter()
        .find(|(flag, _)| values.protocol & wanted & flag != 0)
    {
        out[n] = Rendered::new(*flag);
        for &b in text.as_bytes() {
            out[n].push(b);
        }
        n += 1;
    }
    (out, n)
}

/// `dd/Mon/yyyy:HH:MM:SS +0000`, the common log format's time in UTC.
fn clf_time(millis: i64) -> Option<Rendered> {
    let secs = millis.div_euclid(1000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    if !(1000..=9999).contains(&year) {
        return None;
    }
    let of_day = secs.rem_euclid(86_400) as u64;
    let mut r = Rendered::new(TIME);
    r.decimal(u64::from(day), 2);
    r.push(b'/');
    for &b in MONTHS[(month - 1) as usize] {
        r.push(b);
    }
    r.push(b'/');
    r.decimal(year as u64, 4);
    for (sep, part) in [
        (b':', of_day / 3600),
        (b':', of_day / 60 % 60),
        (b':', of_day % 60),
    ] {
        r.push(sep);
        r.decimal(part, 2);
    }
    for &b in b" +0000" {
        r.push(b);
    }
    Some(r)
}

/// The words of `text` as the `default` tokenizer splits them, for ASCII
/// text: runs of letters and digits (the tokenizer also lowercases them
/// and drops those of 40 bytes or more, longer than any rendered word).
fn ascii_words(text: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < text.len() && !text[at].is_ascii_alphanumeric() {
            at += 1;
        }
        if at >= text.len() {
            return None;
        }
        let start = at;
        while at < text.len() && text[at].is_ascii_alphanumeric() {
            at += 1;
        }
        Some((start, at))
    })
}

/// Finds in `raw`, outside the spans already in `cut`, the rendered text
/// of each value, standing alone (not inside a longer word); adds its
/// span to `cut` and returns the flags of the values found, for the
/// `derived` field.
///
/// `request_end` is where the request's target ends, 0 if the line has
/// none. An access log writes the status, the size and the protocol after
/// it, so their search starts there: from the line's start, each digit of
/// the client address and the time was a candidate to check. Which copy
/// of a value is cut does not matter (any copy standing alone leaves the
/// same words), so a value not found after it is looked for everywhere.
pub fn find(raw: &str, values: &Values, cut: &mut Vec<(usize, usize)>, request_end: usize) -> u64 {
    let (rendered, n) = render(values, ALL);
    let bytes = raw.as_bytes();
    let mut flags = 0;
    for r in &rendered[..n] {
        let starts: &[usize] = match r.flag {
            TIME => &[0],
            _ if request_end > 0 && request_end < bytes.len() => &[request_end, 0],
            _ => &[0],
        };
        if let Some(span) = starts
            .iter()
            .find_map(|&start| find_alone(bytes, r.as_bytes(), start, cut))
        {
            cut.push(span);
            flags |= r.flag;
        }
    }
    flags
}

/// The first copy of `needle` in `bytes[at..]` that stands alone and
/// lies outside every span of `cut`.
fn find_alone(
    bytes: &[u8],
    needle: &[u8],
    at: usize,
    cut: &[(usize, usize)],
) -> Option<(usize, usize)> {
    // Needles are short and lines a few hundred bytes: a first-byte scan
    // beats building a `memmem::Finder` per value.
    let mut from = at;
    while let Some(i) = memchr::memchr(needle[0], &bytes[from..]) {
        let (start, end) = (from + i, from + i + needle.len());
        from = start + 1;
        // Inside a span cut already (the user agent is long and full
        // of digits): on past it.
        if let Some(&(_, span_end)) = cut.iter().find(|&&(s, e)| (s..e).contains(&start)) {
            from = span_end;
            continue;
        }
        if bytes.get(start..end) != Some(needle) {
            continue;
        }
        let alone = bytes[..start]
            .last()
            .is_none_or(|b| !b.is_ascii_alphanumeric() && b.is_ascii())
            && bytes
                .get(end)
                .is_none_or(|b| !b.is_ascii_alphanumeric() && b.is_ascii());
        // Not reaching into a span cut already.
        let free = cut.iter().all(|&(s, e)| end <= s || start >= e);
        if alone && free {
            return Some((start, end));
        }
    }
    None
}

/// What a derived word must be to match.
#[derive(Clone)]
pub enum WordMatch {
    /// This token of the `default` tokenizer (lowercase).
    Exact(String),
    /// A token starting with this.
    Prefix(String),
    /// Any token the predicate accepts (a regex or a range on words):
    /// every document with derived words renders them.
    Any(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl fmt::Debug for WordMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WordMatch::Exact(w) => write!(f, "Exact({w:?})"),
            WordMatch::Prefix(w) => write!(f, "Prefix({w:?})"),
            WordMatch::Any(_) => f.write_str("Any(..)"),
        }
    }
}

impl WordMatch {
    /// The groups that could render a matching word: none for most words,
    /// so most word queries never read a fast field.
    fn candidate_groups(&self) -> u64 {
        let (text, prefix) = match self {
            WordMatch::Exact(w) => (w.as_str(), false),
            WordMatch::Prefix(w) => (w.as_str(), true),
            WordMatch::Any(_) => return ALL,
        };
        let w = text.as_bytes();
        if w.is_empty() || w.len() > 20 {
            return 0;
        }
        let protocols = self.protocol_flags();
        let digits = w.iter().all(u8::is_ascii_digit);
        if prefix {
            if digits {
                return TIME | STATUS | BYTES | protocols;
            }
            let month = MONTHS.iter().any(|m| {
                m.get(..w.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(w))
            });
            return if month { TIME } else { protocols };
        }
        if !digits {
            return if MONTHS.iter().any(|m| m.eq_ignore_ascii_case(w)) {
                TIME
            } else {
                protocols
            };
        }
        let mut groups = protocols;
        if w.len() == 2 || w.len() == 4 {
            groups |= TIME;
        }
        if canonical_decimal(text).is_some() {
            groups |= STATUS | BYTES;
        }
        groups
    }

    /// The protocols with a word this matches (`http`, `1`, `h*`), each
    /// its own flag.
    fn protocol_flags(&self) -> u64 {
        PROTOCOLS
            .iter()
            .filter(|(_, text)| {
                ascii_words(text.as_bytes()).any(|(s, e)| self.accepts(&text.as_bytes()[s..e]))
            })
            .fold(0, |flags, (flag, _)| flags | flag)
    }

    /// `word`: a rendered word, ASCII, not lowercased.
    fn accepts(&self, word: &[u8]) -> bool {
        match self {
            WordMatch::Exact(w) => word.eq_ignore_ascii_case(w.as_bytes()),
            WordMatch::Prefix(w) => word
                .get(..w.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(w.as_bytes())),
            WordMatch::Any(f) => {
                let mut lower = [0u8; 26];
                let lower = &mut lower[..word.len().min(26)];
                for (l, b) in lower.iter_mut().zip(word) {
                    *l = b.to_ascii_lowercase();
                }
                std::str::from_utf8(lower).is_ok_and(|w| f(w))
            }
        }
    }
}

/// The fields a derived word is read from.
#[derive(Clone, Copy, Debug)]
pub struct DerivedFields {
    pub derived: Field,
    pub timestamp: Field,
    pub status: Field,
    pub bytes: Field,
}

/// Documents of a segment with a derived word that `word` accepts.
#[derive(Clone, Debug)]
pub struct DerivedWord {
    pub fields: DerivedFields,
    pub word: WordMatch,
}

impl Query for DerivedWord {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for DerivedWord {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let docs = Columns::open(reader, &self.fields, self.word.candidate_groups())
            .map(|columns| columns.matching(&self.word))
            .unwrap_or_else(|| BitSet::with_max_value(reader.max_doc()));
        Ok(Box::new(ConstScorer::new(BitSetDocSet::from(docs), boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) == doc {
            Ok(Explanation::new(
                "a word rendered from the fast fields",
                1.0,
            ))
        } else {
            Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} does not match"
            )))
        }
    }
}

/// The fast fields of one segment a word may be rendered from.
struct Columns {
    wanted: u64,
    max_doc: DocId,
    derived: Column<u64>,
    timestamp: Option<Column<DateTime>>,
    status: Option<Column<u64>>,
    bytes: Option<Column<u64>>,
}

/// Documents read at once from a column.
const BLOCK: usize = 1024;

const DAY_MILLIS: i64 = 86_400_000;

impl Columns {
    /// `None` when no value of `wanted` can match, or the segment has no
    /// derived words.
    fn open(reader: &SegmentReader, f: &DerivedFields, wanted: u64) -> Option<Columns> {
        if wanted == 0 {
            return None;
        }
        let fast = reader.fast_fields();
        let name = |field: Field| reader.schema().get_field_name(field).to_string();
        let u64_column = |field: Field| fast.u64(&name(field)).ok();
        Some(Columns {
            wanted,
            max_doc: reader.max_doc(),
            derived: u64_column(f.derived)?,
            timestamp: (wanted & TIME != 0)
                .then(|| fast.date(&name(f.timestamp)).ok())
                .flatten(),
            status: (wanted & STATUS != 0)
                .then(|| u64_column(f.status))
                .flatten(),
            bytes: (wanted & BYTES != 0).then(|| u64_column(f.bytes)).flatten(),
        })
    }

    /// Every document of the segment with a derived word `word` accepts.
    fn matching(&self, word: &WordMatch) -> BitSet {
        let mut docs = BitSet::with_max_value(self.max_doc);
        let mut candidates = Vec::new();
        match word {
            WordMatch::Exact(w) => {
                if let Some(value) = canonical_decimal(w) {
                    for (flag, column) in [(STATUS, &self.status), (BYTES, &self.bytes)] {
                        if let (true, Some(column)) = (self.wanted & flag != 0, column) {
                            // Outside the column's values tantivy 0.27's
                            // range scan may answer rows of other values
                            // (status 8 found the 200s).
                            if !(column.min_value()..=column.max_value()).contains(&value) {
                                continue;
                            }
                            candidates.clear();
                            column.get_docids_for_value_range(
                                value..=value,
                                0..self.max_doc,
                                &mut candidates,
                            );
                            self.keep_flagged(&candidates, flag, &mut docs);
                        }
                    }
                }
                if self.wanted & TIME != 0 {
                    self.time_word(w.as_bytes(), &mut docs);
                }
                if self.wanted & PROTOCOL != 0 {
                    // `wanted` holds the protocols with this word.
                    self.flagged_blocks(self.wanted & PROTOCOL, |block, flags| {
                        for (&doc, &f) in block.iter().zip(flags) {
                            if f != 0 {
                                docs.insert(doc);
                            }
                        }
                    });
                }
            }
            // Prefixes, regexes and ranges on words: every flagged
            // document renders its words (rare queries).
            WordMatch::Prefix(_) | WordMatch::Any(_) => self.render_each(word, &mut docs),
        }
        docs
    }

    /// Adds the documents of `candidates` whose `flag` is set.
    fn keep_flagged(&self, candidates: &[DocId], flag: u64, docs: &mut BitSet) {
        let mut flags = [None; BLOCK];
        for block in candidates.chunks(BLOCK) {
            let flags = &mut flags[..block.len()];
            flags.fill(None);
            self.derived.first_vals(block, flags);
            for (&doc, f) in block.iter().zip(flags.iter()) {
                if f.unwrap_or(0) & flag != 0 {
                    docs.insert(doc);
                }
            }
        }
    }

    /// An exact word against the rendered times. The words of the date
    /// are the same all day, so a day partition answers them from its time
    /// range; a two-digit word up to 59 may be a day, an hour, a minute or
    /// a second, read from each document's time ([`Columns::clock_word`]).
    /// A segment spanning many days (never a day partition) renders every
    /// line's words.
    fn time_word(&self, w: &[u8], docs: &mut BitSet) {
        let Some(column) = &self.timestamp else {
            return;
        };
        if self.max_doc == 0 {
            return;
        }
        let (first, last) = (
            column.min_value().into_timestamp_millis(),
            column.max_value().into_timestamp_millis(),
        );
        let days = first.div_euclid(DAY_MILLIS)..=last.div_euclid(DAY_MILLIS);
        if days.clone().count() > 3 {
            self.render_each(&WordMatch::Exact(String::from_utf8_lossy(w).into()), docs);
            return;
        }
        let two_digits = w.len() == 2 && w.iter().all(u8::is_ascii_digit);
        if two_digits && w <= &b"59"[..] {
            self.clock_word(column, u64::from((w[0] - b'0') * 10 + (w[1] - b'0')), docs);
            return;
        }
        let mut candidates = Vec::new();
        for day in days {
            let start = day * DAY_MILLIS;
            let Some(date) = clf_time(start) else {
                continue;
            };
            let date_words: Vec<&[u8]> = date.words().take(3).collect();
            if date_words.iter().any(|d| d.eq_ignore_ascii_case(w)) || w == b"0000" {
                candidates.clear();
                // Within the column's values (see `matching`).
                column.get_docids_for_value_range(
                    DateTime::from_timestamp_millis(start.max(first))
                        ..=DateTime::from_timestamp_millis((start + DAY_MILLIS - 1).min(last)),
                    0..self.max_doc,
                    &mut candidates,
                );
                self.keep_flagged(&candidates, TIME, docs);
            }
        }
    }

    /// A two-digit word up to 59 against the rendered times: the day of
    /// the month, the hour, the minute or the second, read from each
    /// flagged document's time (the day's number once per day).
    fn clock_word(&self, column: &Column<DateTime>, value: u64, docs: &mut BitSet) {
        let mut times = [None; BLOCK];
        let mut day_cache = (i64::MIN, false);
        self.flagged_blocks(TIME, |block, flags| {
            let times = &mut times[..block.len()];
            times.fill(None);
            column.first_vals(block, times);
            for ((&doc, &flags), time) in block.iter().zip(flags).zip(times.iter()) {
                let (true, Some(t)) = (flags != 0, time) else {
                    continue;
                };
                let secs = t.into_timestamp_millis().div_euclid(1000);
                let of_day = secs.rem_euclid(86_400) as u64;
                let day = secs.div_euclid(86_400);
                if day != day_cache.0 {
                    let (_, _, dom) = civil_from_days(day);
                    day_cache = (day, u64::from(dom) == value);
                }
                if day_cache.1
                    || of_day / 3600 == value
                    || of_day / 60 % 60 == value
                    || of_day % 60 == value
                {
                    docs.insert(doc);
                }
            }
        });
    }

    /// Renders the words of every flagged document and keeps those with a
    /// word `word` accepts.
    fn render_each(&self, word: &WordMatch, docs: &mut BitSet) {
        let mut times = [None; BLOCK];
        let mut statuses = [None; BLOCK];
        let mut sizes = [None; BLOCK];
        self.flagged_blocks(self.wanted, |block, flags| {
            let n = block.len();
            for (column, out) in [(&self.status, &mut statuses), (&self.bytes, &mut sizes)] {
                out[..n].fill(None);
                if let Some(column) = column {
                    column.first_vals(block, &mut out[..n]);
                }
            }
            times[..n].fill(None);
            if let Some(column) = &self.timestamp {
                column.first_vals(block, &mut times[..n]);
            }
            for i in 0..n {
                if flags[i] == 0 {
                    continue;
                }
                let values = Values {
                    timestamp_millis: times[i].map(DateTime::into_timestamp_millis),
                    status: statuses[i],
                    bytes: sizes[i],
                    protocol: flags[i] & PROTOCOL,
                };
                let (rendered, r) = render(&values, flags[i]);
                if rendered[..r]
                    .iter()
                    .flat_map(Rendered::words)
                    .any(|w| word.accepts(w))
                {
                    docs.insert(block[i]);
                }
            }
        });
    }

    /// Every document of the segment, a block at a time, with its
    /// `derived` flags among `wanted` (0 for a document without them).
    fn flagged_blocks(&self, wanted: u64, mut each: impl FnMut(&[DocId], &[u64])) {
        let mut block = Vec::with_capacity(BLOCK);
        let mut read = [None; BLOCK];
        let mut flags = [0u64; BLOCK];
        let mut start = 0;
        while start < self.max_doc {
            let end = self.max_doc.min(start + BLOCK as DocId);
            block.clear();
            block.extend(start..end);
            let n = block.len();
            read[..n].fill(None);
            self.derived.first_vals(&block, &mut read[..n]);
            for (f, r) in flags[..n].iter_mut().zip(&read[..n]) {
                *f = r.unwrap_or(0) & wanted;
            }
            each(&block, &flags[..n]);
            start = end;
        }
    }
}

/// `w` as a number written the way a log writes numbers (no leading
/// zero), if it is one.
fn canonical_decimal(w: &str) -> Option<u64> {
    let canonical = w.len() == 1 || !w.starts_with('0');
    canonical
        .then(|| w.parse().ok())
        .flatten()
        .filter(|_| w.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(millis: i64, status: u64, bytes: u64) -> Values {
        Values {
            timestamp_millis: Some(millis),
            status: Some(status),
            bytes: Some(bytes),
            protocol: 0,
        }
    }

    // 2024-10-10T12:05:09Z
    const AT: i64 = 1_728_561_909_000;

    fn cut_texts<'a>(raw: &'a str, values: &Values) -> (u64, Vec<&'a str>) {
        let mut spans = Vec::new();
        let flags = find(raw, values, &mut spans, 0);
        spans.sort_unstable();
        (flags, spans.iter().map(|&(s, e)| &raw[s..e]).collect())
    }

    #[test]
    fn a_common_log_line_gives_up_its_time_status_and_size() {
        let raw = r#"10.0.0.1 - - [10/Oct/2024:12:05:09 +0000] "GET / HTTP/1.1" 200 5 "-" "x""#;
        let (flags, texts) = cut_texts(raw, &values(AT, 200, 5));
        assert_eq!(flags, TIME | STATUS | BYTES);
        assert_eq!(texts, ["10/Oct/2024:12:05:09 +0000", "200", "5"]);
    }

    #[test]
    fn values_are_looked_for_after_the_request_first_then_everywhere() {
        let raw = r#"10.0.0.200 - - [10/Oct/2024:12:05:09 +0000] "GET /a HTTP/1.1" 200 5 "-" "x""#;
        let request_end = raw.find(" HTTP").expect("a request");
        let mut spans = Vec::new();
        let flags = find(raw, &values(AT, 200, 5), &mut spans, request_end);
        assert_eq!(flags, TIME | STATUS | BYTES);
        let status = spans
            .iter()
            .find(|&&(s, e)| &raw[s..e] == "200")
            .expect("the status is cut");
        assert!(
            status.0 > request_end,
            "the status, not the address's octet"
        );

        // A JSON line writes its fields in any order: a status before the
        // request's end is still found.
        let raw = r#"{"status":200,"size":5,"request":"GET /a HTTP/1.1"}"#;
        let request_end = raw.find(" HTTP").expect("a request");
        let mut spans = Vec::new();
        let flags = find(raw, &values(AT, 200, 5), &mut spans, request_end);
        assert_eq!(flags, STATUS | BYTES, "{spans:?}");
    }

    #[test]
    fn the_request_protocol_leaves_as_one_of_its_flags() {
        let raw = r#"10.0.0.1 - - [10/Oct/2024:12:05:09 +0000] "GET /HTTP/1.1 HTTP/1.1" 200 5"#;
        let mut spans = vec![(raw.find("/HTTP").unwrap(), raw.find("/HTTP").unwrap() + 9)];
        let v = Values {
            protocol: protocol_flag("HTTP/1.1"),
            ..Values::default()
        };
        assert_eq!(find(raw, &v, &mut spans, 0), 16);
        let (start, end) = spans[1];
        assert_eq!(&raw[start..end], "HTTP/1.1");
        assert!(
            start > raw.find("/HTTP").unwrap() + 9,
            "not inside the path"
        );
        assert_eq!(protocol_flag("HTTP/1.2"), 0, "an unknown version stays");
        let (r, n) = render(&v, PROTOCOL);
        assert_eq!((n, r[0].as_bytes()), (1, &b"HTTP/1.1"[..]));
    }

    #[test]
    fn a_value_written_another_way_stays() {
        // A local zone, ISO time, a size inside a word.
        let raw = "10.0.0.1 [10/Oct/2024:14:05:09 +0200] 404 x5";
        let (flags, texts) = cut_texts(raw, &values(AT, 404, 5));
        assert_eq!((flags, texts), (STATUS, vec!["404"]));
        let raw = "2001:db8::1 2024-10-10T12:05:09Z 200 0";
        let (flags, _) = cut_texts(raw, &values(AT, 200, 0));
        assert_eq!(flags, STATUS | BYTES);
        // Inside a longer number: not this one.
        let raw = "12005 x5y";
        assert_eq!(cut_texts(raw, &values(AT, 200, 5)).0, 0);
    }

    #[test]
    fn a_span_taken_is_not_taken_twice() {
        // The status and the size are both 200: one text each.
        let mut spans = vec![(0, 4)];
        let raw = "/200 200 200";
        let v = Values {
            status: Some(200),
            bytes: Some(200),
            ..Values::default()
        };
        assert_eq!(find(raw, &v, &mut spans, 0), STATUS | BYTES);
        assert_eq!(spans, [(0, 4), (5, 8), (9, 12)]);
        let mut spans = Vec::new();
        assert_eq!(find("x 200 y", &v, &mut spans, 0), STATUS);
    }

    #[test]
    fn values_are_rendered_as_the_log_writes_them() {
        let time = clf_time(AT).expect("in range");
        assert_eq!(time.as_bytes(), b"10/Oct/2024:12:05:09 +0000");
        let words: Vec<&[u8]> = time.words().collect();
        assert_eq!(
            words,
            [&b"10"[..], b"Oct", b"2024", b"12", b"05", b"09", b"0000"]
        );
        let (r, n) = render(&values(AT, 0, u64::MAX), STATUS | BYTES);
        assert_eq!(n, 2);
        assert_eq!(r[0].as_bytes(), b"0");
        assert_eq!(r[1].as_bytes(), u64::MAX.to_string().as_bytes());
        assert_eq!(
            clf_time(-1).map(|t| t.as_bytes()[7..11].to_vec()),
            Some(b"1969".to_vec())
        );
    }

    #[test]
    fn only_words_a_value_can_render_read_the_fast_fields() {
        let query = |word: &str, prefix: bool| {
            if prefix {
                WordMatch::Prefix(word.into())
            } else {
                WordMatch::Exact(word.into())
            }
        };
        assert_eq!(query("admin", false).candidate_groups(), 0);
        assert_eq!(query("oct", false).candidate_groups(), TIME);
        assert_eq!(query("o", true).candidate_groups(), TIME);
        assert_eq!(query("05", false).candidate_groups(), TIME);
        assert_eq!(query("404", false).candidate_groups(), STATUS | BYTES);
        assert_eq!(
            query("2024", false).candidate_groups(),
            TIME | STATUS | BYTES
        );
        // `0`: a status or a size, or the `0` of HTTP/1.0 and HTTP/2.0.
        assert_eq!(
            query("0", false).candidate_groups(),
            STATUS | BYTES | 32 | 64
        );
        assert_eq!(query("http", false).candidate_groups(), PROTOCOL);
        assert_eq!(query("ht", true).candidate_groups(), PROTOCOL);
        assert_eq!(query("3", false).candidate_groups(), STATUS | BYTES | 256);
        assert_eq!(canonical_decimal("0"), Some(0));
        assert_eq!(canonical_decimal("05"), None);
        assert_eq!(canonical_decimal("5a"), None);
        assert_eq!(query("123456", false).candidate_groups(), STATUS | BYTES);
        assert!(query("oct", false).accepts(b"Oct"));
        assert!(query("20", true).accepts(b"2024"));
        assert!(!query("2024", true).accepts(b"20"));
    }
}
