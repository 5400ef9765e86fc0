//! OpenTelemetry tracing: exports custflow's spans (REST ingest → processor → SQL sink,
//! joined by `traceparent` headers on the topics) over OTLP/HTTP; off unless
//! `--otlp-endpoint` is set.

use anyhow::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// The installed tracer provider; dropping it flushes and stops the exporter.
pub(crate) struct Telemetry(Option<SdkTracerProvider>);

/// The traces URL of a collector given by its base URL (`http://host:4318`), as the
/// OTLP exporter specification builds it; a URL that already names the path is kept.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Installs the OTLP exporter when `endpoint` is set; `sample` is the share of new
/// traces kept (a sampled parent is always followed).
pub(crate) fn init(endpoint: &str, sample: f64) -> anyhow::Result<Telemetry> {
    if endpoint.is_empty() {
        return Ok(Telemetry(None));
    }
    anyhow::ensure!(
        endpoint.starts_with("http://"),
        "--otlp-endpoint must be an http:// URL of an OTLP/HTTP collector, not {endpoint:?}"
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(traces_url(endpoint))
        .build()
        .context("--otlp-endpoint")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            sample,
        ))))
        .with_resource(Resource::builder().with_service_name("custflow").build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    custflow_kafka::trace::enable();
    Ok(Telemetry(Some(provider)))
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "flushing traces failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
