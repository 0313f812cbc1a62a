//! OpenTelemetry logs (OTLP/HTTP, `ExportLogsServiceRequest`) in protobuf
//! and JSON, and their mapping to nightowl's lines.
//!
//! The protobuf decoder is hand-written for the dozen messages of the logs
//! signal (opentelemetry-proto `logs/v1`, `common/v1`, `resource/v1`):
//! no code generator, no build step, unknown fields skipped as the
//! protobuf rules require, and nesting bounded so a hostile body cannot
//! exhaust the stack.
//!
//! A record becomes one JSON line whose keys the JSON parser already maps
//! (the OpenTelemetry semantic conventions share their names with ECS):
//! `@timestamp` (the record's time, else its observed time), `severity`
//! (the text, else the name of the severity number's range), `message`
//! (a scalar body; a map or list body is kept whole under `body`), then
//! the resource's and the record's attributes as top-level keys (the
//! record's win): `service.name` becomes the app, `host.name` the host,
//! `http.request.method`, `url.path`, `http.response.status_code`,
//! `client.address` and `user_agent.original` the request fields. An
//! attribute named like one of those reserved keys is kept under
//! `attributes.<name>`. `trace_id` and `span_id` are hex. Lines are
//! batched by host (`host.name`) and source (the record's `log.file.path`,
//! else `otlp`).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::Origin;

/// How deep `AnyValue`s may nest (maps in lists in maps...). Real senders
/// stay within a handful of levels; protobuf libraries default to 100.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogsRequest {
    pub resource_logs: Vec<ResourceLogs>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceLogs {
    pub resource: Vec<KeyValue>,
    pub scope_logs: Vec<ScopeLogs>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScopeLogs {
    pub scope_name: String,
    pub records: Vec<LogRecord>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogRecord {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: String,
    pub body: Option<AnyValue>,
    pub attributes: Vec<KeyValue>,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub event_name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    pub key: String,
    pub value: AnyValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AnyValue {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(Vec<AnyValue>),
    Map(Vec<KeyValue>),
    Bytes(Vec<u8>),
    /// A value with none of the fields set (allowed by the spec).
    Empty,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct DecodeError(String);

fn err(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

impl LogsRequest {
    pub fn record_count(&self) -> u64 {
        self.resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.records.len() as u64)
            .sum()
    }
}

// ------------------------------------------------------------- protobuf

/// A protobuf reader over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Wire {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| err(format!("truncated varint at byte {}", self.pos)))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(err(format!(
            "varint longer than 10 bytes at byte {}",
            self.pos
        )))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                err(format!(
                    "a field of {n} bytes at byte {} runs past the end of its message",
                    self.pos
                ))
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next field's number and wire type; `None` at the end.
    fn key(&mut self) -> Result<Option<(u64, Wire)>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint,
            1 => Wire::Fixed64,
            2 => Wire::Len,
            5 => Wire::Fixed32,
            other => return Err(err(format!("unsupported wire type {other} (groups)"))),
        };
        Ok(Some((key >> 3, wire)))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| err("length overflows"))?)
    }

    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| err(format!("{what} is not UTF-8")))
    }

    fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| err("fixed64"))?,
        ))
    }

    fn skip(&mut self, wire: Wire) -> Result<(), DecodeError> {
        match wire {
            Wire::Varint => self.varint().map(drop),
            Wire::Fixed64 => self.take(8).map(drop),
            Wire::Fixed32 => self.take(4).map(drop),
            Wire::Len => self.bytes().map(drop),
        }
    }

    /// A field of the expected wire type, or an error naming it.
    fn expect(&self, wire: Wire, want: Wire, what: &str) -> Result<(), DecodeError> {
        if wire == want {
            Ok(())
        } else {
            Err(err(format!("{what} has the wrong wire type")))
        }
    }
}

/// Decodes an `ExportLogsServiceRequest`.
pub fn decode_protobuf(body: &[u8]) -> Result<LogsRequest, DecodeError> {
    let mut r = Reader::new(body);
    let mut out = LogsRequest::default();
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => {
                r.expect(wire, Wire::Len, "resource_logs")?;
                out.resource_logs.push(resource_logs(r.bytes()?)?);
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

fn resource_logs(buf: &[u8]) -> Result<ResourceLogs, DecodeError> {
    let mut r = Reader::new(buf);
    let mut out = ResourceLogs::default();
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, Wire::Len) => {
                // Resource { repeated KeyValue attributes = 1; ... }
                let mut res = Reader::new(r.bytes()?);
                while let Some((field, wire)) = res.key()? {
                    match (field, wire) {
                        (1, Wire::Len) => out.resource.push(key_value(res.bytes()?, 0)?),
                        _ => res.skip(wire)?,
                    }
                }
            }
            (2, Wire::Len) => out.scope_logs.push(scope_logs(r.bytes()?)?),
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

fn scope_logs(buf: &[u8]) -> Result<ScopeLogs, DecodeError> {
    let mut r = Reader::new(buf);
    let mut out = ScopeLogs::default();
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, Wire::Len) => {
                // InstrumentationScope { string name = 1; ... }
                let mut scope = Reader::new(r.bytes()?);
                while let Some((field, wire)) = scope.key()? {
                    match (field, wire) {
                        (1, Wire::Len) => out.scope_name = scope.string("scope name")?,
                        _ => scope.skip(wire)?,
                    }
                }
            }
            (2, Wire::Len) => out.records.push(log_record(r.bytes()?)?),
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

fn log_record(buf: &[u8]) -> Result<LogRecord, DecodeError> {
    let mut r = Reader::new(buf);
    let mut out = LogRecord::default();
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, Wire::Fixed64) => out.time_unix_nano = r.fixed64()?,
            (11, Wire::Fixed64) => out.observed_time_unix_nano = r.fixed64()?,
            // An enum: int32 on the wire, negative values sign-extended.
            (2, Wire::Varint) => out.severity_number = r.varint()? as i64 as i32,
            (3, Wire::Len) => out.severity_text = r.string("severity_text")?,
            (5, Wire::Len) => out.body = Some(any_value(r.bytes()?, 0)?),
            (6, Wire::Len) => out.attributes.push(key_value(r.bytes()?, 0)?),
            (9, Wire::Len) => out.trace_id = r.bytes()?.to_vec(),
            (10, Wire::Len) => out.span_id = r.bytes()?.to_vec(),
            (12, Wire::Len) => out.event_name = r.string("event_name")?,
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

fn key_value(buf: &[u8], depth: usize) -> Result<KeyValue, DecodeError> {
    let mut r = Reader::new(buf);
    let mut key = String::new();
    let mut value = AnyValue::Empty;
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, Wire::Len) => key = r.string("attribute key")?,
            (2, Wire::Len) => value = any_value(r.bytes()?, depth)?,
            _ => r.skip(wire)?,
        }
    }
    Ok(KeyValue { key, value })
}

fn any_value(buf: &[u8], depth: usize) -> Result<AnyValue, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(err(format!("values nest deeper than {MAX_DEPTH} levels")));
    }
    let mut r = Reader::new(buf);
    let mut value = AnyValue::Empty;
    while let Some((field, wire)) = r.key()? {
        value = match (field, wire) {
            (1, Wire::Len) => AnyValue::Str(r.string("string_value")?),
            (2, Wire::Varint) => AnyValue::Bool(r.varint()? != 0),
            (3, Wire::Varint) => AnyValue::Int(r.varint()? as i64),
            (4, Wire::Fixed64) => AnyValue::Double(f64::from_bits(r.fixed64()?)),
            (5 | 6, Wire::Len) => {
                // ArrayValue { repeated AnyValue values = 1 } and
                // KeyValueList { repeated KeyValue values = 1 }.
                let mut list = Reader::new(r.bytes()?);
                let (mut items, mut pairs) = (Vec::new(), Vec::new());
                while let Some((f, w)) = list.key()? {
                    match (f, w) {
                        (1, Wire::Len) if field == 5 => {
                            items.push(any_value(list.bytes()?, depth + 1)?)
                        }
                        (1, Wire::Len) => pairs.push(key_value(list.bytes()?, depth + 1)?),
                        _ => list.skip(w)?,
                    }
                }
                if field == 5 {
                    AnyValue::Array(items)
                } else {
                    AnyValue::Map(pairs)
                }
            }
            (7, Wire::Len) => AnyValue::Bytes(r.bytes()?.to_vec()),
            _ => {
                r.skip(wire)?;
                continue;
            }
        };
    }
    Ok(value)
}

/// Writes protobuf fields (the responses are two small messages).
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    pub fn int(&mut self, field: u64, v: i64) {
        if v != 0 {
            self.varint(field << 3);
            self.varint(v as u64);
        }
    }

    pub fn bytes(&mut self, field: u64, v: &[u8]) {
        if !v.is_empty() {
            self.varint((field << 3) | 2);
            self.varint(v.len() as u64);
            self.0.extend_from_slice(v);
        }
    }
}

/// `ExportLogsServiceResponse`, with `partial_success` set when records
/// were rejected (an empty message otherwise, as the spec asks).
pub fn encode_response(rejected: u64, message: &str) -> Vec<u8> {
    let mut partial = Writer::default();
    partial.int(1, rejected as i64);
    partial.bytes(2, message.as_bytes());
    let mut out = Writer::default();
    out.bytes(1, &partial.0);
    out.0
}

/// `google.rpc.Status`: the body of an OTLP/HTTP error answer.
pub fn encode_status(code: i32, message: &str) -> Vec<u8> {
    let mut out = Writer::default();
    out.int(1, i64::from(code));
    out.bytes(2, message.as_bytes());
    out.0
}

// ----------------------------------------------------------------- JSON

/// Decodes an `ExportLogsServiceRequest` in OTLP/JSON: lowerCamelCase
/// names (the proto names accepted too), 64-bit integers as strings or
/// numbers, trace and span ids in hex, bytes in base64.
pub fn decode_json(body: &[u8]) -> Result<LogsRequest, DecodeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| err(format!("the body is not JSON: {e}")))?;
    let mut out = LogsRequest::default();
    for rl in list(&value, "resourceLogs", "resource_logs")? {
        let mut resource_logs = ResourceLogs::default();
        if let Some(resource) = field(rl, "resource", "resource") {
            resource_logs.resource = json_attributes(resource, 0)?;
        }
        for sl in list(rl, "scopeLogs", "scope_logs")? {
            let mut scope_logs = ScopeLogs {
                scope_name: field(sl, "scope", "scope")
                    .and_then(|s| s.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                records: Vec::new(),
            };
            for lr in list(sl, "logRecords", "log_records")? {
                scope_logs.records.push(json_record(lr)?);
            }
            resource_logs.scope_logs.push(scope_logs);
        }
        out.resource_logs.push(resource_logs);
    }
    Ok(out)
}

fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel)
        .or_else(|| v.get(snake))
        .filter(|v| !v.is_null())
}

fn list<'a>(v: &'a Value, camel: &str, snake: &str) -> Result<&'a [Value], DecodeError> {
    match field(v, camel, snake) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(err(format!("{camel} is not a list"))),
    }
}

fn json_u64(v: Option<&Value>, what: &str) -> Result<u64, DecodeError> {
    match v {
        None => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| err(format!("{what} is not an unsigned integer"))),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| err(format!("{what} {s:?} is not an unsigned integer"))),
        Some(_) => Err(err(format!("{what} is not a number"))),
    }
}

fn json_record(lr: &Value) -> Result<LogRecord, DecodeError> {
    let text = |camel, snake| {
        field(lr, camel, snake)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let hex_id = |camel, snake| -> Result<Vec<u8>, DecodeError> {
        let s = text(camel, snake);
        hex::decode(&s).map_err(|_| err(format!("{camel} {s:?} is not hex")))
    };
    let severity = json_u64(
        field(lr, "severityNumber", "severity_number"),
        "severityNumber",
    )?;
    Ok(LogRecord {
        time_unix_nano: json_u64(field(lr, "timeUnixNano", "time_unix_nano"), "timeUnixNano")?,
        observed_time_unix_nano: json_u64(
            field(lr, "observedTimeUnixNano", "observed_time_unix_nano"),
            "observedTimeUnixNano",
        )?,
        severity_number: i32::try_from(severity).unwrap_or(0),
        severity_text: text("severityText", "severity_text"),
        body: field(lr, "body", "body")
            .map(|b| json_any(b, 0))
            .transpose()?,
        attributes: json_attributes(lr, 0)?,
        trace_id: hex_id("traceId", "trace_id")?,
        span_id: hex_id("spanId", "span_id")?,
        event_name: text("eventName", "event_name"),
    })
}

/// The `attributes` (or a list's `values`) of `v`.
fn json_attributes(v: &Value, depth: usize) -> Result<Vec<KeyValue>, DecodeError> {
    json_pairs(list(v, "attributes", "attributes")?, depth)
}

fn json_pairs(items: &[Value], depth: usize) -> Result<Vec<KeyValue>, DecodeError> {
    items
        .iter()
        .map(|kv| {
            Ok(KeyValue {
                key: kv
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                value: match kv.get("value") {
                    Some(v) => json_any(v, depth)?,
                    None => AnyValue::Empty,
                },
            })
        })
        .collect()
}

fn json_any(v: &Value, depth: usize) -> Result<AnyValue, DecodeError> {
    use base64::Engine as _;
    if depth > MAX_DEPTH {
        return Err(err(format!("values nest deeper than {MAX_DEPTH} levels")));
    }
    if let Some(s) = field(v, "stringValue", "string_value") {
        return Ok(AnyValue::Str(s.as_str().unwrap_or_default().to_string()));
    }
    if let Some(b) = field(v, "boolValue", "bool_value") {
        return Ok(AnyValue::Bool(b.as_bool().unwrap_or(false)));
    }
    if let Some(i) = field(v, "intValue", "int_value") {
        let n = match i {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        };
        return n
            .map(AnyValue::Int)
            .ok_or_else(|| err(format!("intValue {i} is not a 64-bit integer")));
    }
    if let Some(d) = field(v, "doubleValue", "double_value") {
        let n = match d {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_f64(),
            _ => None,
        };
        return n
            .map(AnyValue::Double)
            .ok_or_else(|| err(format!("doubleValue {d} is not a number")));
    }
    if let Some(a) = field(v, "arrayValue", "array_value") {
        return list(a, "values", "values")?
            .iter()
            .map(|item| json_any(item, depth + 1))
            .collect::<Result<_, _>>()
            .map(AnyValue::Array);
    }
    if let Some(m) = field(v, "kvlistValue", "kvlist_value") {
        return json_pairs(list(m, "values", "values")?, depth + 1).map(AnyValue::Map);
    }
    if let Some(b) = field(v, "bytesValue", "bytes_value") {
        let text = b.as_str().unwrap_or_default();
        return base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(AnyValue::Bytes)
            .map_err(|_| err("bytesValue is not base64"));
    }
    Ok(AnyValue::Empty)
}

// ------------------------------------------------------------- mapping

/// The keys the mapping writes itself; attributes so named move to
/// `attributes.<name>`.
const RESERVED: [&str; 7] = [
    "@timestamp",
    "severity",
    "message",
    "body",
    "trace_id",
    "span_id",
    "event_name",
];

/// What a request becomes: newline-terminated lines per origin, and the
/// records refused (with the first reason) for the partial success answer.
#[derive(Debug, Default)]
pub struct Mapped {
    pub batches: HashMap<Origin, Vec<u8>>,
    pub accepted: u64,
    pub rejected: u64,
    pub first_error: Option<String>,
}

/// Maps every record to its line; a record whose line would exceed
/// `max_line_bytes` is rejected, the others kept.
pub fn to_lines(request: &LogsRequest, max_line_bytes: usize) -> Mapped {
    let mut out = Mapped::default();
    let mut n = 0u64;
    for rl in &request.resource_logs {
        let host = attribute_str(&rl.resource, "host.name").unwrap_or_default();
        for sl in &rl.scope_logs {
            for record in &sl.records {
                n += 1;
                let line = record_line(&rl.resource, &sl.scope_name, record);
                let line = match serde_json::to_vec(&line) {
                    Ok(line) => line,
                    Err(e) => {
                        out.reject(format!("log record {n} does not serialize: {e}"));
                        continue;
                    }
                };
                if line.len() > max_line_bytes {
                    out.reject(format!(
                        "log record {n} is {} bytes as a line; the limit is {max_line_bytes} (limits.max_line_bytes)",
                        line.len()
                    ));
                    continue;
                }
                let source = attribute_str(&record.attributes, "log.file.path").unwrap_or("otlp");
                let origin = Origin {
                    host: host.to_string(),
                    source: source.to_string(),
                    format: "json",
                };
                let batch = out.batches.entry(origin).or_default();
                batch.extend_from_slice(&line);
                batch.push(b'\n');
                out.accepted += 1;
            }
        }
    }
    out
}

impl Mapped {
    fn reject(&mut self, reason: String) {
        self.rejected += 1;
        self.first_error.get_or_insert(reason);
    }
}

fn attribute_str<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().rev().find_map(|kv| match &kv.value {
        AnyValue::Str(s) if kv.key == key => Some(s.as_str()),
        _ => None,
    })
}

/// The JSON object one record is stored as.
pub fn record_line(resource: &[KeyValue], scope: &str, record: &LogRecord) -> Map<String, Value> {
    let mut line = Map::new();
    for kv in resource.iter().chain(&record.attributes) {
        if kv.key.is_empty() {
            continue;
        }
        let key = if RESERVED.contains(&kv.key.as_str()) {
            format!("attributes.{}", kv.key)
        } else {
            kv.key.clone()
        };
        line.insert(key, to_json(&kv.value));
    }
    let time = match (record.time_unix_nano, record.observed_time_unix_nano) {
        (0, observed) => observed,
        (time, _) => time,
    };
    if time != 0 {
        let nanos = i64::try_from(time).unwrap_or(i64::MAX);
        line.insert(
            "@timestamp".into(),
            Value::String(crate::time::format_rfc3339(nanos)),
        );
    }
    let severity = if record.severity_text.is_empty() {
        severity_name(record.severity_number).unwrap_or_default()
    } else {
        record.severity_text.as_str()
    };
    if !severity.is_empty() {
        line.insert("severity".into(), Value::String(severity.to_string()));
    }
    match &record.body {
        None | Some(AnyValue::Empty) => {}
        Some(AnyValue::Str(s)) => {
            line.insert("message".into(), Value::String(s.clone()));
        }
        Some(v @ (AnyValue::Map(_) | AnyValue::Array(_))) => {
            line.insert("body".into(), to_json(v));
        }
        Some(scalar) => {
            let text = match to_json(scalar) {
                Value::String(s) => s,
                other => other.to_string(),
            };
            line.insert("message".into(), Value::String(text));
        }
    }
    if !record.trace_id.is_empty() {
        line.insert(
            "trace_id".into(),
            Value::String(hex::encode(&record.trace_id)),
        );
    }
    if !record.span_id.is_empty() {
        line.insert(
            "span_id".into(),
            Value::String(hex::encode(&record.span_id)),
        );
    }
    if !record.event_name.is_empty() {
        line.insert(
            "event_name".into(),
            Value::String(record.event_name.clone()),
        );
    }
    if !scope.is_empty() && !line.contains_key("otel.scope.name") {
        line.insert("otel.scope.name".into(), Value::String(scope.to_string()));
    }
    line
}

/// The range names of the OpenTelemetry severity numbers (1-24).
fn severity_name(number: i32) -> Option<&'static str> {
    Some(match number {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => return None,
    })
}

fn to_json(v: &AnyValue) -> Value {
    use base64::Engine as _;
    match v {
        AnyValue::Str(s) => Value::String(s.clone()),
        AnyValue::Bool(b) => Value::Bool(*b),
        AnyValue::Int(i) => Value::from(*i),
        AnyValue::Double(d) => serde_json::Number::from_f64(*d)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(d.to_string())),
        AnyValue::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        AnyValue::Map(pairs) => Value::Object(
            pairs
                .iter()
                .map(|kv| (kv.key.clone(), to_json(&kv.value)))
                .collect(),
        ),
        AnyValue::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        AnyValue::Empty => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: AnyValue) -> KeyValue {
        KeyValue {
            key: key.into(),
            value,
        }
    }

    /// Encodes a request with the same field numbers the decoder reads,
    /// written independently from the opentelemetry-proto definitions.
    fn encode_request(req: &LogsRequest) -> Vec<u8> {
        fn any(v: &AnyValue) -> Vec<u8> {
            let mut w = Writer::default();
            match v {
                AnyValue::Str(s) => {
                    w.varint(1 << 3 | 2);
                    w.varint(s.len() as u64);
                    w.0.extend_from_slice(s.as_bytes());
                }
                AnyValue::Bool(b) => {
                    w.varint(2 << 3);
                    w.varint(u64::from(*b));
                }
                AnyValue::Int(i) => {
                    w.varint(3 << 3);
                    w.varint(*i as u64);
                }
                AnyValue::Double(d) => {
                    w.varint(4 << 3 | 1);
                    w.0.extend_from_slice(&d.to_bits().to_le_bytes());
                }
                AnyValue::Array(items) => {
                    let mut list = Writer::default();
                    for item in items {
                        let bytes = any(item);
                        list.varint(1 << 3 | 2);
                        list.varint(bytes.len() as u64);
                        list.0.extend_from_slice(&bytes);
                    }
                    w.varint(5 << 3 | 2);
                    w.varint(list.0.len() as u64);
                    w.0.extend_from_slice(&list.0);
                }
                AnyValue::Map(pairs) => {
                    let mut list = Writer::default();
                    for p in pairs {
                        list.bytes(1, &pair(p));
                    }
                    w.varint(6 << 3 | 2);
                    w.varint(list.0.len() as u64);
                    w.0.extend_from_slice(&list.0);
                }
                AnyValue::Bytes(b) => w.bytes(7, b),
                AnyValue::Empty => {}
            }
            w.0
        }
        fn pair(p: &KeyValue) -> Vec<u8> {
            let mut w = Writer::default();
            w.bytes(1, p.key.as_bytes());
            let value = any(&p.value);
            w.varint(2 << 3 | 2);
            w.varint(value.len() as u64);
            w.0.extend_from_slice(&value);
            w.0
        }
        let mut out = Writer::default();
        for rl in &req.resource_logs {
            let mut resource = Writer::default();
            for a in &rl.resource {
                resource.bytes(1, &pair(a));
            }
            let mut rlw = Writer::default();
            rlw.bytes(1, &resource.0);
            for sl in &rl.scope_logs {
                let mut scope = Writer::default();
                scope.bytes(1, sl.scope_name.as_bytes());
                let mut slw = Writer::default();
                slw.bytes(1, &scope.0);
                for r in &sl.records {
                    let mut rw = Writer::default();
                    rw.varint(1 << 3 | 1);
                    rw.0.extend_from_slice(&r.time_unix_nano.to_le_bytes());
                    rw.int(2, i64::from(r.severity_number));
                    rw.bytes(3, r.severity_text.as_bytes());
                    if let Some(body) = &r.body {
                        let b = any(body);
                        rw.varint(5 << 3 | 2);
                        rw.varint(b.len() as u64);
                        rw.0.extend_from_slice(&b);
                    }
                    for a in &r.attributes {
                        rw.bytes(6, &pair(a));
                    }
                    // An unknown field (a future addition) is skipped.
                    rw.int(99, 7);
                    rw.bytes(9, &r.trace_id);
                    rw.bytes(10, &r.span_id);
                    rw.varint(11 << 3 | 1);
                    rw.0.extend_from_slice(&r.observed_time_unix_nano.to_le_bytes());
                    slw.bytes(2, &rw.0);
                }
                rlw.bytes(2, &slw.0);
            }
            out.bytes(1, &rlw.0);
        }
        out.0
    }

    fn sample() -> LogsRequest {
        LogsRequest {
            resource_logs: vec![ResourceLogs {
                resource: vec![
                    kv("service.name", AnyValue::Str("checkout".into())),
                    kv("host.name", AnyValue::Str("app1".into())),
                ],
                scope_logs: vec![ScopeLogs {
                    scope_name: "orders".into(),
                    records: vec![LogRecord {
                        time_unix_nano: 1_795_000_000_123_456_789,
                        observed_time_unix_nano: 1_795_000_001_000_000_000,
                        severity_number: 17,
                        severity_text: String::new(),
                        body: Some(AnyValue::Str("order 7 failed".into())),
                        attributes: vec![
                            kv("order_id", AnyValue::Int(-7)),
                            kv("ratio", AnyValue::Double(0.5)),
                            kv("retry", AnyValue::Bool(true)),
                            kv("message", AnyValue::Str("shadowed".into())),
                            kv(
                                "items",
                                AnyValue::Array(vec![AnyValue::Map(vec![kv(
                                    "sku",
                                    AnyValue::Str("A1".into()),
                                )])]),
                            ),
                            kv("raw", AnyValue::Bytes(vec![0, 255])),
                        ],
                        trace_id: vec![0xab; 16],
                        span_id: vec![0xcd; 8],
                        event_name: String::new(),
                    }],
                }],
            }],
        }
    }

    #[test]
    fn protobuf_round_trips_through_the_decoder() {
        let req = sample();
        let decoded = decode_protobuf(&encode_request(&req)).expect("decodes");
        assert_eq!(decoded, req);
        assert_eq!(decoded.record_count(), 1);
    }

    #[test]
    fn records_map_to_json_lines_the_parser_understands() {
        let mapped = to_lines(&sample(), 1 << 20);
        assert_eq!((mapped.accepted, mapped.rejected), (1, 0));
        let (origin, lines) = mapped.batches.iter().next().expect("one batch");
        assert_eq!(
            (origin.host.as_str(), origin.source.as_str()),
            ("app1", "otlp")
        );
        let line: Value =
            serde_json::from_slice(lines.strip_suffix(b"\n").expect("newline")).expect("json line");
        assert_eq!(line["message"], "order 7 failed");
        assert_eq!(line["severity"], "ERROR", "from the severity number");
        assert_eq!(line["service.name"], "checkout");
        assert_eq!(line["order_id"], -7);
        assert_eq!(line["attributes.message"], "shadowed");
        assert_eq!(line["items"][0]["sku"], "A1");
        assert_eq!(line["raw"], "AP8=");
        assert_eq!(line["trace_id"], "ab".repeat(16));
        assert_eq!(line["@timestamp"], "2026-11-18T11:06:40.123456789Z");
        let text = std::str::from_utf8(lines).expect("utf8");
        let event = crate::parse::parse_line(
            text.trim_end().as_bytes(),
            crate::parse::Format::Auto,
            &crate::parse::ParseContext::now(),
        )
        .expect("parses");
        assert_eq!(event.app.as_deref(), Some("checkout"));
        assert_eq!(event.host.as_deref(), Some("app1"));
        assert_eq!(event.severity, Some(3));
        assert_eq!(event.timestamp, Some(1_795_000_000_123_456_789));
    }

    #[test]
    fn json_encoding_decodes_to_the_same_request() {
        let body = serde_json::json!({
            "resourceLogs": [{
                "resource": { "attributes": [
                    { "key": "service.name", "value": { "stringValue": "checkout" } },
                    { "key": "host.name", "value": { "stringValue": "app1" } },
                ]},
                "scopeLogs": [{
                    "scope": { "name": "orders" },
                    "logRecords": [{
                        "timeUnixNano": "1795000000123456789",
                        "observedTimeUnixNano": 1_795_000_001_000_000_000u64,
                        "severityNumber": 17,
                        "body": { "stringValue": "order 7 failed" },
                        "attributes": [
                            { "key": "order_id", "value": { "intValue": "-7" } },
                            { "key": "ratio", "value": { "doubleValue": 0.5 } },
                            { "key": "retry", "value": { "boolValue": true } },
                            { "key": "message", "value": { "stringValue": "shadowed" } },
                            { "key": "items", "value": { "arrayValue": { "values": [
                                { "kvlistValue": { "values": [
                                    { "key": "sku", "value": { "stringValue": "A1" } }
                                ]}}
                            ]}}},
                            { "key": "raw", "value": { "bytesValue": "AP8=" } },
                        ],
                        "traceId": "ab".repeat(16),
                        "spanId": "cd".repeat(8),
                        "unknownField": 1,
                    }]
                }]
            }]
        });
        let decoded = decode_json(body.to_string().as_bytes()).expect("decodes");
        assert_eq!(decoded, sample());
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        let mut good = encode_request(&sample());
        good.truncate(good.len() - 3);
        assert!(decode_protobuf(&good).is_err(), "truncated");
        assert!(decode_protobuf(&[0x0b]).is_err(), "group wire type");
        // A value nested past the bound: each level an array of one.
        let mut v = any_leaf();
        for _ in 0..=MAX_DEPTH + 1 {
            let mut list = Writer::default();
            list.bytes(1, &v);
            let mut w = Writer::default();
            w.bytes(5, &list.0);
            v = w.0;
        }
        let e = any_value(&v, 0).expect_err("too deep");
        assert!(e.to_string().contains("nest deeper"), "{e}");
        assert!(decode_json(b"{\"resourceLogs\": 3}").is_err());
        assert!(decode_json(b"not json").is_err());
    }

    fn any_leaf() -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(1, b"x");
        w.0
    }

    #[test]
    fn long_records_are_rejected_and_the_rest_kept() {
        let mut req = sample();
        let mut long = req.resource_logs[0].scope_logs[0].records[0].clone();
        long.body = Some(AnyValue::Str("y".repeat(2000)));
        req.resource_logs[0].scope_logs[0].records.push(long);
        let mapped = to_lines(&req, 1000);
        assert_eq!((mapped.accepted, mapped.rejected), (1, 1));
        assert!(mapped
            .first_error
            .is_some_and(|e| e.contains("log record 2") && e.contains("1000")));
    }

    #[test]
    fn responses_encode_partial_success_only_when_something_was_rejected() {
        assert_eq!(encode_response(0, ""), Vec::<u8>::new());
        // partial_success { rejected_log_records: 2, error_message: "x" }
        assert_eq!(
            encode_response(2, "x"),
            vec![0x0a, 5, 0x08, 2, 0x12, 1, b'x']
        );
        assert_eq!(
            encode_status(3, "bad"),
            vec![0x08, 3, 0x12, 3, b'b', b'a', b'd']
        );
    }
}
