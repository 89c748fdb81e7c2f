//! Protocol Buffers encoding of the few OTLP messages a span needs (`KeyValue`, `AnyValue`,
//! `Span`, `Event`, `Status` and the export request around them), written straight from our
//! values into one buffer: no intermediate message structs, no copy of a key or a value
//! besides the one into the buffer. Field numbers are those of `opentelemetry/proto/trace/v1`
//! and `common/v1`; the tests decode what this writes with the generated types.

use prost::encoding::{encode_varint, encoded_len_varint};

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

fn tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    encode_varint(u64::from((field << 3) | wire), buf);
}

/// Bytes a length-delimited field of `n` bytes takes (every field number here is below 16,
/// so its tag is one byte).
pub fn len_field_size(n: usize) -> usize {
    1 + encoded_len_varint(n as u64) + n
}

/// The tag and length of a length-delimited field whose `n` bytes follow.
pub fn len_prefix(buf: &mut Vec<u8>, field: u32, n: usize) {
    tag(buf, field, LEN);
    encode_varint(n as u64, buf);
}

pub fn bytes_field(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    len_prefix(buf, field, data.len());
    buf.extend_from_slice(data);
}

pub fn varint_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    tag(buf, field, VARINT);
    encode_varint(value, buf);
}

pub fn fixed64_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    tag(buf, field, FIXED64);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// An attribute's value (`AnyValue`'s scalar cases).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
}

impl Value<'_> {
    fn encoded_len(&self) -> usize {
        match self {
            Value::Str(s) => len_field_size(s.len()),
            // A negative int64 is ten bytes of varint, as protobuf writes it.
            Value::Int(i) => 1 + encoded_len_varint(*i as u64),
            Value::Double(_) => 9,
            Value::Bool(_) => 2,
        }
    }

    fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Value::Str(s) => bytes_field(buf, 1, s.as_bytes()),
            Value::Bool(b) => varint_field(buf, 2, u64::from(*b)),
            Value::Int(i) => varint_field(buf, 3, *i as u64),
            Value::Double(d) => fixed64_field(buf, 4, d.to_bits()),
        }
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(s: &'a str) -> Self {
        Value::Str(s)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(s: &'a String) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value<'_> {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<f64> for Value<'_> {
    fn from(d: f64) -> Self {
        Value::Double(d)
    }
}

impl From<bool> for Value<'_> {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// One `KeyValue` as an entry of the repeated message field `field` (a span's attributes are
/// field 9, an event's 3, a resource's 1).
pub fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: Value<'_>) {
    let any = value.encoded_len();
    len_prefix(buf, field, len_field_size(key.len()) + len_field_size(any));
    bytes_field(buf, 1, key.as_bytes());
    len_prefix(buf, 2, any);
    value.encode(buf);
}

/// `ExportTraceServiceRequest` with one `ResourceSpans` of one `ScopeSpans`, around `spans`
/// (each an encoded `Span`). `resource` and `scope` are encoded `Resource` and
/// `InstrumentationScope` messages.
pub fn export_request(resource: &[u8], scope: &[u8], spans: &[Vec<u8>]) -> Vec<u8> {
    let spans_len: usize = spans.iter().map(|s| len_field_size(s.len())).sum();
    let scope_spans = len_field_size(scope.len()) + spans_len;
    let resource_spans = len_field_size(resource.len()) + len_field_size(scope_spans);
    let mut buf = Vec::with_capacity(len_field_size(resource_spans));
    len_prefix(&mut buf, 1, resource_spans);
    bytes_field(&mut buf, 1, resource);
    len_prefix(&mut buf, 2, scope_spans);
    bytes_field(&mut buf, 1, scope);
    for s in spans {
        bytes_field(&mut buf, 2, s);
    }
    buf
}
