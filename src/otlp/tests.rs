//! What the span writer and the export request encode, decoded with OTLP's generated types;
//! W3C context in and out; the exporter's settings and its behaviour without a collector.

use std::time::Duration;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use prost::Message as _;
use tonic::codec::CompressionEncoding;

use super::*;

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn attr<'a>(span: &'a Span, key: &str) -> Vec<&'a Any> {
    span.attributes
        .iter()
        .filter(|kv| kv.key == key)
        .filter_map(|kv| kv.value.as_ref()?.value.as_ref())
        .collect()
}

fn default_sampler() -> opentelemetry_sdk::trace::Sampler {
    sampler_from_env(|_| None).unwrap()
}

const LIMIT: usize = 1 << 20;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn a_span_decodes_as_otlp_with_everything_written() {
    let incoming = headers(&[("traceparent", PARENT), ("tracestate", "vendor=x")]);
    let mut w = SpanWriter::start("ext_proc", &incoming, &default_sampler(), LIMIT);
    assert!(w.sampled());
    w.rename("ChatCompletion");
    w.attr("text", "héllo");
    w.attr("empty", "");
    w.attr("int", 42i64);
    w.attr("negative", -7i64);
    w.attr("zero", 0i64);
    w.attr("ratio", 0.5f64);
    w.attr("flag", true);
    w.late_str("llm.model_name", "asked".into());
    w.late_str("llm.model_name", "answered".into());
    w.late_int("http.response.status_code", 404);
    w.event(
        "first_token",
        1_000,
        &[("time_to_first_token_ms", Value::Double(12.5))],
    );
    w.error("refused");
    let bytes = w.finish(2_000);
    let span = Span::decode(bytes.as_slice()).expect("a valid OTLP Span");

    assert_eq!(span.name, "ChatCompletion");
    assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(span.span_id.len(), 8);
    assert_ne!(hex(&span.span_id), "00f067aa0ba902b7");
    assert_eq!(span.trace_state, "vendor=x");
    assert_eq!(span.kind, SpanKind::Client as i32);
    assert!(span.start_time_unix_nano > 0 && span.end_time_unix_nano >= span.start_time_unix_nano);
    assert_eq!(attr(&span, "text"), [&Any::StringValue("héllo".into())]);
    assert_eq!(attr(&span, "empty"), [&Any::StringValue(String::new())]);
    assert_eq!(attr(&span, "int"), [&Any::IntValue(42)]);
    assert_eq!(attr(&span, "negative"), [&Any::IntValue(-7)]);
    assert_eq!(attr(&span, "zero"), [&Any::IntValue(0)]);
    assert_eq!(attr(&span, "ratio"), [&Any::DoubleValue(0.5)]);
    assert_eq!(attr(&span, "flag"), [&Any::BoolValue(true)]);
    // Set twice, written once: the last value.
    assert_eq!(
        attr(&span, "llm.model_name"),
        [&Any::StringValue("answered".into())]
    );
    assert_eq!(
        attr(&span, "http.response.status_code"),
        [&Any::IntValue(404)]
    );
    assert_eq!(span.events.len(), 1);
    assert_eq!(span.events[0].name, "first_token");
    assert_eq!(span.events[0].time_unix_nano, 1_000);
    assert_eq!(
        span.events[0].attributes[0].value.as_ref().unwrap().value,
        Some(Any::DoubleValue(12.5))
    );
    let status = span.status.expect("error status");
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "refused");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn context_in_and_out() {
    // A child of the client's trace hands its own id on, sampled as its parent was.
    let incoming = headers(&[("traceparent", PARENT), ("tracestate", "vendor=x")]);
    let w = SpanWriter::start("x", &incoming, &default_sampler(), LIMIT);
    let out = w.context_headers();
    assert!(
        out.contains(&("tracestate".to_string(), "vendor=x".to_string())),
        "{out:?}"
    );
    let traceparent = &out.iter().find(|(k, _)| k == "traceparent").unwrap().1;
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(parts[2], "00f067aa0ba902b7");
    assert_eq!(parts[3], "01");

    // An unsampled parent: not recorded, but the context still goes on (unsampled).
    let unsampled = PARENT.replace("-01", "-00");
    let w = SpanWriter::start(
        "x",
        &headers(&[("traceparent", &unsampled)]),
        &default_sampler(),
        LIMIT,
    );
    assert!(!w.sampled());
    assert!(w.context_headers()[0].1.ends_with("-00"));

    // No parent, or a malformed one: a new trace.
    for incoming in [headers(&[]), headers(&[("traceparent", "garbage")])] {
        let mut w = SpanWriter::start("x", &incoming, &default_sampler(), LIMIT);
        assert!(w.sampled());
        let span = Span::decode(w.finish(1).as_slice()).unwrap();
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.trace_id.len(), 16);
    }

    // OTEL_TRACES_SAMPLER=always_off records nothing.
    let off = sampler_from_env(|k| (k == "OTEL_TRACES_SAMPLER").then(|| "always_off".into()));
    assert!(!SpanWriter::start("x", &headers(&[]), &off.unwrap(), LIMIT).sampled());
}

#[test]
fn the_sampler_variable_is_checked() {
    let env = |sampler: &'static str, arg: Option<&'static str>| {
        move |k: &str| match k {
            "OTEL_TRACES_SAMPLER" => Some(sampler.to_string()),
            "OTEL_TRACES_SAMPLER_ARG" => arg.map(String::from),
            _ => None,
        }
    };
    assert!(sampler_from_env(env("parentbased_traceidratio", Some("0.25"))).is_ok());
    let e = sampler_from_env(env("traceidratio", Some("2"))).unwrap_err();
    assert!(e.contains("OTEL_TRACES_SAMPLER_ARG"), "{e}");
    let e = sampler_from_env(env("jaeger_remote", None)).unwrap_err();
    assert!(
        e.contains("OTEL_TRACES_SAMPLER") && e.contains("jaeger_remote"),
        "{e}"
    );
}

#[test]
fn an_export_request_holds_resource_scope_and_spans() {
    let spans: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let mut w = SpanWriter::start("s", &headers(&[]), &default_sampler(), LIMIT);
            w.attr("i", i as i64);
            w.finish(1)
        })
        .collect();
    let mut resource = Vec::new();
    wire::key_value(&mut resource, 1, "service.name", Value::Str("ai-extproc"));
    let mut scope = Vec::new();
    wire::bytes_field(&mut scope, 1, b"ai-extproc");
    let bytes = wire::export_request(&resource, &scope, &spans);
    let request = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
    let rs = &request.resource_spans[0];
    let service = &rs.resource.as_ref().unwrap().attributes[0];
    assert_eq!(service.key, "service.name");
    let ss = &rs.scope_spans[0];
    assert_eq!(ss.scope.as_ref().unwrap().name, "ai-extproc");
    assert_eq!(ss.spans.len(), 3);
    assert_eq!(attr(&ss.spans[2], "i"), [&Any::IntValue(2)]);
}

#[test]
fn settings_that_cannot_be_honoured_are_errors_naming_them() {
    let none = |_: &str| None;
    let e = Settings::from_env("grpc://collector:4317", none).unwrap_err();
    assert!(
        e.contains("--otlp-endpoint") && e.contains("https://"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let junk = junk.to_str().unwrap();
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
        ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", junk),
        // One of the client's pair without the other.
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", junk),
    ] {
        let e = Settings::from_env("https://collector:4317", |k| {
            (k == var).then(|| value.into())
        })
        .unwrap_err();
        assert!(e.contains(var), "{var}: {e}");
    }
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "-1"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "bad header=x"),
    ] {
        let e = Settings::from_env("http://127.0.0.1:4317", |k| {
            (k == var).then(|| value.into())
        })
        .unwrap_err();
        assert!(e.contains(var), "{var}: {e}");
    }
    let ok = Settings::from_env("http://127.0.0.1:4317", |k| {
        (k == "OTEL_EXPORTER_OTLP_HEADERS").then(|| "api-key=a%3Db, X-Team = ml".into())
    })
    .unwrap();
    assert_eq!(ok.header("api-key"), Some("a=b"));
    assert_eq!(ok.header("x-team"), Some("ml"));
    let shown = format!("{ok:?}");
    assert!(
        shown.contains("api-key") && !shown.contains("a=b"),
        "{shown}"
    );
}

#[test]
fn without_a_collector_spans_are_dropped_and_counted_not_waited_on() {
    // Nothing listens on the port: the export fails fast and its spans are counted.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = Settings::from_env(&format!("http://127.0.0.1:{port}"), |k| match k {
        "OTEL_BSP_SCHEDULE_DELAY" => Some("10".into()),
        "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("2000".into()),
        _ => None,
    })
    .unwrap();
    let (sink, guard) = start(settings).unwrap();
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let mut w = SpanWriter::start("s", &headers(&[]), &default_sampler(), LIMIT);
        sink.send(w.finish(1));
    }
    drop(guard); // flushes: the export is tried and fails
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(sink.dropped(), 3);
}

#[test]
fn attributes_past_the_limit_are_dropped_and_counted() {
    let mut w = SpanWriter::start("s", &headers(&[]), &default_sampler(), 100);
    w.attr("small", "x");
    w.attr("big", "y".repeat(200).as_str());
    w.attr("after", 1i64);
    w.late_str("llm.model_name", "m".into());
    let span = Span::decode(w.finish(1).as_slice()).unwrap();
    assert_eq!(span.dropped_attributes_count, 1);
    assert!(attr(&span, "big").is_empty());
    assert_eq!(attr(&span, "after"), [&Any::IntValue(1)]);
    // What a later phase sets (the answering model, the error) is always written.
    assert_eq!(attr(&span, "llm.model_name").len(), 1);
}

#[test]
fn a_full_queue_drops_spans_and_counts_them() {
    let (sink, mut received) = Sink::for_test();
    // 1 MiB of room: the fourth 300 KB span does not fit.
    for _ in 0..4 {
        sink.send(vec![0; 300 << 10]);
    }
    assert_eq!(received.spans().len(), 3);
    assert_eq!(sink.dropped(), 1);
    // Taken for export: room again.
    sink.send(vec![0; 300 << 10]);
    assert_eq!(received.spans().len(), 1);
}

/// What the test collector saw: spans, and whether they came gzip-compressed.
#[derive(Default)]
struct Seen {
    spans: usize,
    gzip: bool,
}

/// A collector that takes every export, rejecting `rejects` spans of each and saying why.
struct Collector {
    rejects: i64,
    seen: Arc<std::sync::Mutex<Seen>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let gzip = request
            .metadata()
            .get("grpc-encoding")
            .is_some_and(|v| v == "gzip");
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let mut seen = self.seen.lock().unwrap();
        seen.spans += spans;
        seen.gzip |= gzip;
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: (self.rejects > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: self.rejects,
                error_message: "span too large".into(),
            }),
        }))
    }
}

/// Starts the test collector on a loopback port (TLS with `tls`) on a thread of its own, for
/// 30 s at most; returns its port and what it sees.
fn collector(
    rejects: i64,
    tls: Option<rustls::ServerConfig>,
) -> (u16, Arc<std::sync::Mutex<Seen>>) {
    use futures_util::StreamExt as _;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = TraceServiceServer::new(Collector {
        rejects,
        seen: seen.clone(),
    })
    .accept_compressed(CompressionEncoding::Gzip);
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let server = tonic::transport::Server::builder().add_service(service);
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let serve = async move {
                match tls {
                    None => server.serve_with_incoming(incoming).await,
                    Some(config) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                        // A handshake that fails (a client that does not trust us) ends
                        // that connection only.
                        let tls = incoming
                            .filter_map(move |tcp| {
                                let acceptor = acceptor.clone();
                                async move { acceptor.accept(tcp.ok()?).await.ok() }
                            })
                            .map(Ok::<_, std::io::Error>);
                        server.serve_with_incoming(tls).await
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(30), serve).await;
        })
    });
    (port, seen)
}

/// Three spans exported to `endpoint` with the variables `env`; returns how many were dropped.
fn export_three(endpoint: &str, env: &[(&str, String)]) -> u64 {
    let settings = Settings::from_env(endpoint, |k| {
        if k == "OTEL_BSP_SCHEDULE_DELAY" {
            return Some("10".into());
        }
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
    })
    .unwrap();
    let (sink, guard) = start(settings).unwrap();
    for _ in 0..3 {
        let mut w = SpanWriter::start("s", &headers(&[]), &default_sampler(), LIMIT);
        sink.send(w.finish(1));
    }
    drop(guard); // flushes: one export of the 3 spans
    sink.dropped()
}

#[test]
fn spans_a_collector_rejects_are_counted_as_dropped() {
    let (port, seen) = collector(2, None);
    let dropped = export_three(&format!("http://127.0.0.1:{port}"), &[]);
    assert_eq!(seen.lock().unwrap().spans, 3);
    assert_eq!(dropped, 2);
}

#[test]
fn exports_can_be_gzip_compressed() {
    let (port, seen) = collector(0, None);
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = [("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".to_string())];
    assert_eq!(export_three(&endpoint, &env), 0);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.spans, 3);
    assert!(seen.gzip, "the export was not gzip-compressed");
}

#[test]
fn an_https_collector_is_verified_against_the_ca_given() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::upstreams::TestCa::generate(&["localhost"]).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let (port, seen) = collector(0, Some((*ca.server_config).clone()));
    let endpoint = format!("https://localhost:{port}");
    // Trusting the collector's CA: the spans arrive.
    let env = [(
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        ca_file.to_str().unwrap().to_string(),
    )];
    assert_eq!(export_three(&endpoint, &env), 0);
    assert_eq!(seen.lock().unwrap().spans, 3);
    // With the system's roots only, the test CA is not trusted: nothing is sent.
    assert_eq!(export_three(&endpoint, &[]), 3);
    assert_eq!(seen.lock().unwrap().spans, 3);
}

/// A CA, a `localhost` server certificate and a client certificate it signed, as PEM
/// (certificate, key) pairs, and the CA's certificate.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca,
        server: leaf("localhost"),
        client: leaf("ai-extproc"),
    }
}

#[test]
fn a_collector_that_wants_a_client_certificate_gets_the_one_configured() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pki = pki();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(pki.server.0.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(pki.server.1.as_bytes()).unwrap(),
        )
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec()];
    let (port, seen) = collector(0, Some(server));
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let ca = ("OTEL_EXPORTER_OTLP_CERTIFICATE", file("ca.pem", &pki.ca));
    let endpoint = format!("https://localhost:{port}");
    // Without a client certificate the collector refuses the connection.
    assert_eq!(export_three(&endpoint, std::slice::from_ref(&ca)), 3);
    assert_eq!(seen.lock().unwrap().spans, 0);
    let env = [
        ca,
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            file("client.pem", &pki.client.0),
        ),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            file("client.key", &pki.client.1),
        ),
    ];
    assert_eq!(export_three(&endpoint, &env), 0);
    assert_eq!(seen.lock().unwrap().spans, 3);
}
