//! The one way metrics leave a process: components implement [`Collector`] by writing
//! their families through [`Families`], a [`Registry`] gathers them, and
//! `prometheus-client` encodes the Prometheus text (names, label escaping, `# HELP` and
//! `# TYPE` once per family).

use std::fmt;

use prometheus_client::encoding::{EncodeGaugeValue, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::histogram::Histogram;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;

/// The `Content-Type` of [`Registry::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The collectors of one exposition.
#[derive(Debug, Default)]
pub struct Registry(prometheus_client::registry::Registry);

impl Registry {
    /// Adds a component's metrics.
    pub fn collect(&mut self, collector: impl Collector) -> &mut Self {
        self.0.register_collector(Box::new(collector));
        self
    }

    /// A registry of one collector.
    pub fn of(collector: impl Collector) -> Self {
        let mut r = Self::default();
        r.collect(collector);
        r
    }

    /// Every collector's metrics in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String does not fail; a collector's own error leaves what it wrote.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.0);
        out
    }
}

/// Writes metric families for a [`Collector`]. Names are the exported ones: a counter's
/// name ends in `_total` (the encoder adds the suffix back).
pub struct Families<'a>(DescriptorEncoder<'a>);

impl<'a> From<DescriptorEncoder<'a>> for Families<'a> {
    fn from(e: DescriptorEncoder<'a>) -> Self {
        Self(e)
    }
}

impl Families<'_> {
    fn family<'s>(
        &'s mut self,
        name: &'s str,
        help: &str,
        kind: MetricType,
    ) -> Result<MetricEncoder<'s>, fmt::Error> {
        let name = match kind {
            MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        self.0.encode_descriptor(name, help, None, kind)
    }

    /// A counter without labels.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        self.family(name, help, MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl EncodeGaugeValue) -> fmt::Result {
        self.family(name, help, MetricType::Gauge)?
            .encode_gauge(&value)
    }

    /// A histogram without labels.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) -> fmt::Result {
        h.encode(&mut self.family(name, help, MetricType::Histogram)?)
    }

    /// One counter per label set. An empty series writes the family's header alone.
    pub fn counters<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, u64)>,
    ) -> fmt::Result {
        let mut family = self.family(name, help, MetricType::Counter)?;
        for (labels, value) in series {
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        Ok(())
    }

    /// One gauge per label set.
    pub fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result {
        let mut family = self.family(name, help, MetricType::Gauge)?;
        for (labels, value) in series {
            family.encode_family(&labels)?.encode_gauge(&value)?;
        }
        Ok(())
    }

    /// One histogram per label set.
    pub fn histograms<'h, L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, &'h Histogram)>,
    ) -> fmt::Result {
        let mut family = self.family(name, help, MetricType::Histogram)?;
        for (labels, h) in series {
            h.encode(&mut family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Debug, Default)]
    struct Demo {
        latency: Histogram,
    }

    impl Collector for Demo {
        fn encode(&self, e: DescriptorEncoder) -> fmt::Result {
            let mut f = Families::from(e);
            f.counter("demo_events_total", "Events", 3)?;
            f.gauges(
                "demo_lag",
                "Lag by partition",
                [([("topic", "a\"b"), ("partition", "0")], 5i64)],
            )?;
            f.histogram("demo_seconds", "Latency", &self.latency)
        }
    }

    #[test]
    fn families_render_once_with_escaped_labels() {
        let demo = Arc::new(Demo::default());
        demo.latency.observe(0.002);
        demo.latency.observe(20.0);
        let text = Registry::of(demo.clone()).render();
        assert!(
            text.contains("# TYPE demo_events_total counter\ndemo_events_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("demo_lag{topic=\"a\\\"b\",partition=\"0\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("demo_seconds_bucket{le=\"0.0025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("demo_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("demo_seconds_count 2\n"), "{text}");
        assert_eq!(text.matches("# HELP demo_lag ").count(), 1);
    }
}
