//! Trace context across the broker: the W3C `traceparent` of a traced event travels in a
//! Kafka header, so REST ingest, the processor and the SQL sink add their spans to one
//! trace. Off (and free) unless the binary installed an exporter ([`enable`]).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState, Tracer};
pub use opentelemetry::trace::{SpanKind, TraceContextExt};
pub use opentelemetry::{Context, KeyValue};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

/// The header (HTTP and Kafka) that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The instrumentation scope of custflow's spans.
const SCOPE: &str = "custflow";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns span making on; called once the binary installed a tracer provider.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether spans are made and trace headers written.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The remote parent a `traceparent` value names (`00-<trace>-<span>-<flags>`), or
/// `None` for a malformed or all-zero one (the W3C rule: start a new trace instead).
pub fn parse(value: &str) -> Option<Context> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if ![version, trace, span, flags].iter().all(|s| lower_hex(s)) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let cx = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    cx.is_valid()
        .then(|| Context::new().with_remote_span_context(cx))
}

/// The `traceparent` value of `cx`'s span, when it has a valid one.
pub fn format(cx: &Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The trace context a message carries, when tracing is on and it has one.
pub fn of_message<M: Message>(msg: &M) -> Option<Context> {
    if !enabled() {
        return None;
    }
    let headers = msg.headers()?;
    let h = headers.iter().find(|h| h.key == TRACEPARENT)?;
    parse(std::str::from_utf8(h.value?).ok()?)
}

/// `headers` with the `traceparent` of `cx` added (unchanged without a valid span).
pub fn add_header(headers: OwnedHeaders, cx: &Context) -> OwnedHeaders {
    match format(cx) {
        Some(value) => headers.insert(Header {
            key: TRACEPARENT,
            value: Some(value.as_bytes()),
        }),
        None => headers,
    }
}

/// Starts a span named `name` under `parent` (a new trace when it has no span), and
/// returns the context holding it; end it with `cx.span().end()`.
pub fn start(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    parent: &Context,
    attributes: Vec<KeyValue>,
) -> Context {
    let tracer = opentelemetry::global::tracer(SCOPE);
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(&tracer, parent);
    parent.with_span(span)
}

/// The messaging attributes of a span about one Kafka message.
pub fn message_attributes<M: Message>(msg: &M) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.destination.name", msg.topic().to_owned()),
        KeyValue::new("messaging.kafka.partition", i64::from(msg.partition())),
        KeyValue::new("messaging.kafka.offset", msg.offset()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_survives_parse_and_format() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse(v).expect("valid");
        assert_eq!(format(&cx).as_deref(), Some(v));
        assert!(cx.span().span_context().is_remote());
    }

    #[test]
    fn malformed_or_zero_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn unknown_flags_are_dropped_but_sampling_kept() {
        let cx = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff").expect("valid");
        assert_eq!(
            format(&cx).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
    }

    #[test]
    fn without_a_span_no_header_is_added() {
        let h = add_header(OwnedHeaders::new(), &Context::new());
        assert_eq!(h.count(), 0);
    }
}
