//! Prometheus metrics at `/metrics`: request counts and latency by route template,
//! delivery attempts by result. Labels are route templates and status codes only —
//! never identifiers or values.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route template (`/fhir/Communication/{id}`), never the concrete path.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub partner: String,
    /// `delivered`, `retry`, `dead-letter` or `stopped`.
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    deliveries: Family<DeliveryLabels, Counter>,
    long_polls: Gauge,
    refusals_not_itemised: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hearth");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer, audit record included; a feed long-poll's wait for new entries is not",
            latency.clone(),
        );
        registry.register(
            "deliveries",
            "Outbound delivery attempts by result",
            deliveries.clone(),
        );
        let long_polls = Gauge::default();
        registry.register(
            "feed_long_polls_waiting",
            "Housing feed reads waiting for new entries (wait=)",
            long_polls.clone(),
        );
        let refusals_not_itemised = Counter::default();
        registry.register(
            "refusals_not_itemised",
            "Refusals of requests without credentials beyond an address's per-minute audit budget: counted into a summary record, not itemised",
            refusals_not_itemised.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            deliveries,
            long_polls,
            refusals_not_itemised,
        }
    }

    pub fn refusal_not_itemised(&self) {
        self.refusals_not_itemised.inc();
    }

    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method).to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    pub fn delivery(&self, partner: &str, result: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                partner: partner.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts a feed read waiting for new entries until the guard is dropped (also when
    /// the client goes away and the read is cancelled).
    pub fn long_poll(&self) -> LongPoll {
        self.long_polls.inc();
        LongPoll(self.long_polls.clone())
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A waiting feed read, counted while it lives.
pub struct LongPoll(Gauge);

impl Drop for LongPoll {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The method as a label: one of HTTP's own, or `other`. Anyone may send any method
/// (even unauthenticated), and each new label value would be a new series kept forever.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_series() {
        let m = Metrics::new();
        for method in ["FOO1", "FOO2", "get", "GET"] {
            m.request(method, "unmatched", 405, 0.001);
        }
        let text = m.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("hearth_http_requests_total"))
            .collect();
        assert_eq!(series.len(), 2, "{series:?}");
        assert!(text.contains("method=\"other\""), "{text}");
    }
}
