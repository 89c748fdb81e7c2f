//! One span being recorded: its identity (a child of the client's W3C trace context), name,
//! times, events, status, and attributes already encoded as OTLP `KeyValue`s, so that ending
//! it is one more buffer write, not a conversion.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{SamplingDecision, SpanContext, SpanId, SpanKind, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator, Sampler, ShouldSample as _};

use super::wire::{self, Value};

/// Nanoseconds since the Unix epoch, as OTLP times are.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `Span.kind` CLIENT: the span is our call of a provider.
const KIND_CLIENT: u64 = 3;
/// `Status.code` ERROR.
const STATUS_ERROR: u64 = 2;

/// An attribute that a later phase may set again (`llm.model_name` is the requested model's
/// provider name until the answer says which model answered): kept aside, written once at the
/// end, so the span never carries a key twice.
#[derive(Debug)]
enum Late {
    Str(String),
    Int(i64),
}

#[derive(Debug)]
pub struct SpanWriter {
    context: SpanContext,
    parent: Option<SpanId>,
    name: Cow<'static, str>,
    start: u64,
    attrs: Vec<u8>,
    /// The attributes' length this phase may reach; past it an attribute is dropped and
    /// counted (a client's ten thousand messages do not become a span of that size).
    limit: usize,
    dropped: u32,
    late: Vec<(&'static str, Late)>,
    events: Vec<u8>,
    error: Option<String>,
}

struct HeaderPairs<'a>(&'a [(String, String)]);

impl Extractor for HeaderPairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

impl SpanWriter {
    /// A new span named `name`, a child of the W3C context in `headers` (`traceparent`,
    /// `tracestate`) when they carry a valid one, else the root of a new trace; recorded if
    /// `sampler` says so (the default samples a child as its parent was, a root always).
    /// Its first attributes are kept within `limit` bytes (see [`SpanWriter::budget`]).
    pub fn start(
        name: &'static str,
        headers: &[(String, String)],
        sampler: &Sampler,
        limit: usize,
    ) -> Self {
        let ids = RandomIdGenerator::default();
        let parent_cx = TraceContextPropagator::new().extract(&HeaderPairs(headers));
        let parent = parent_cx.span().span_context().clone();
        let trace_id = if parent.is_valid() {
            parent.trace_id()
        } else {
            ids.new_trace_id()
        };
        let decision = sampler.should_sample(
            parent.is_valid().then_some(&parent_cx),
            trace_id,
            name,
            &SpanKind::Client,
            &[],
            &[],
        );
        let flags = match decision.decision {
            SamplingDecision::RecordAndSample => opentelemetry::trace::TraceFlags::SAMPLED,
            _ => opentelemetry::trace::TraceFlags::default(),
        };
        Self {
            context: SpanContext::new(
                trace_id,
                ids.new_span_id(),
                flags,
                false,
                decision.trace_state,
            ),
            parent: parent.is_valid().then(|| parent.span_id()),
            name: Cow::Borrowed(name),
            start: now_ns(),
            attrs: Vec::new(),
            limit,
            dropped: 0,
            late: Vec::new(),
            events: Vec::new(),
            error: None,
        }
    }

    /// Whether the span is exported (the sampler's decision); an unsampled one still hands
    /// its context on.
    pub fn sampled(&self) -> bool {
        self.context.is_sampled()
    }

    pub fn rename(&mut self, name: impl Into<Cow<'static, str>>) {
        self.name = name.into();
    }

    /// At most `n` more bytes of attributes from now on: each phase of a request gets its own
    /// budget, so a huge request cannot crowd out what the answer adds (its token counts).
    pub fn budget(&mut self, n: usize) {
        self.limit = self.attrs.len().saturating_add(n);
    }

    /// Room for about `n` more bytes of attributes (a body's worth), so the buffer grows once.
    pub fn reserve(&mut self, n: usize) {
        self.attrs.reserve(n);
    }

    /// An attribute set once (the caller never sets `key` twice); dropped and counted when
    /// it would take the attributes past the limit.
    pub fn attr<'a>(&mut self, key: &str, value: impl Into<Value<'a>>) {
        let before = self.attrs.len();
        wire::key_value(&mut self.attrs, 9, key, value.into());
        if self.attrs.len() > self.limit {
            self.attrs.truncate(before);
            self.dropped += 1;
        }
    }

    /// An attribute a later call may replace.
    pub fn late_str(&mut self, key: &'static str, value: String) {
        self.set_late(key, Late::Str(value));
    }

    pub fn late_int(&mut self, key: &'static str, value: i64) {
        self.set_late(key, Late::Int(value));
    }

    fn set_late(&mut self, key: &'static str, value: Late) {
        match self.late.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.late.push((key, value)),
        }
    }

    /// An event at `at` (Unix nanoseconds) with `attrs`.
    pub fn event(&mut self, name: &str, at: u64, attrs: &[(&str, Value<'_>)]) {
        let mut event = Vec::new();
        wire::fixed64_field(&mut event, 1, at);
        wire::bytes_field(&mut event, 2, name.as_bytes());
        for (k, v) in attrs {
            wire::key_value(&mut event, 3, k, *v);
        }
        wire::bytes_field(&mut self.events, 11, &event);
    }

    /// Error status with `message` (the last one given wins).
    pub fn error(&mut self, message: &str) {
        self.error = Some(message.to_string());
    }

    /// The W3C headers that carry this span's context to the provider (written directly:
    /// the propagator's `inject` builds a `Context` and a map for two strings).
    pub fn context_headers(&self) -> Vec<(String, String)> {
        let c = &self.context;
        let mut out = vec![(
            "traceparent".to_string(),
            format!(
                "00-{}-{}-{:02x}",
                c.trace_id(),
                c.span_id(),
                c.trace_flags().to_u8()
            ),
        )];
        let state = c.trace_state().header();
        if !state.is_empty() {
            out.push(("tracestate".to_string(), state));
        }
        out
    }

    /// The encoded `Span`, ended at `end` (Unix nanoseconds).
    pub fn finish(&mut self, end: u64) -> Vec<u8> {
        for (key, value) in std::mem::take(&mut self.late) {
            let value = match &value {
                Late::Str(s) => Value::Str(s),
                Late::Int(i) => Value::Int(*i),
            };
            wire::key_value(&mut self.attrs, 9, key, value);
        }
        let state = self.context.trace_state().header();
        let mut span = Vec::with_capacity(self.attrs.len() + self.events.len() + 128);
        wire::bytes_field(&mut span, 1, &self.context.trace_id().to_bytes());
        wire::bytes_field(&mut span, 2, &self.context.span_id().to_bytes());
        if !state.is_empty() {
            wire::bytes_field(&mut span, 3, state.as_bytes());
        }
        if let Some(parent) = self.parent {
            wire::bytes_field(&mut span, 4, &parent.to_bytes());
        }
        wire::bytes_field(&mut span, 5, self.name.as_bytes());
        wire::varint_field(&mut span, 6, KIND_CLIENT);
        wire::fixed64_field(&mut span, 7, self.start);
        wire::fixed64_field(&mut span, 8, end.max(self.start));
        span.extend_from_slice(&self.attrs);
        if self.dropped > 0 {
            wire::varint_field(&mut span, 10, u64::from(self.dropped));
        }
        span.extend_from_slice(&self.events);
        if let Some(message) = &self.error {
            let mut status = Vec::with_capacity(message.len() + 4);
            wire::bytes_field(&mut status, 2, message.as_bytes());
            wire::varint_field(&mut status, 3, STATUS_ERROR);
            wire::bytes_field(&mut span, 15, &status);
        }
        span
    }
}
