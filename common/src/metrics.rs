//! Prometheus metrics: each service keeps its own [`Registry`] (so several instances can run in
//! one test process) and serves it as text at `GET /metrics`.

use prometheus::{Encoder, HistogramOpts, HistogramVec, Registry, TextEncoder};

/// Latency buckets from 0.5 ms to 10 s, for HTTP requests and broker/database round trips.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The Prometheus text exposition of everything in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metric families.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buffer);
    String::from_utf8(buffer).unwrap_or_default()
}

/// Registers a collector; names are fixed at compile time, so a clash is a programming error
/// that the tests catch, and it is logged rather than taking the service down.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> C {
    if let Err(error) = registry.register(Box::new(collector.clone())) {
        tracing::error!(%error, "registering a metric failed");
    }
    collector
}

/// `http_request_duration_seconds{method, route, status}`: one histogram for every service.
pub fn http_requests(registry: &Registry) -> HistogramVec {
    let histogram = HistogramVec::new(
        HistogramOpts::new(
            "http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["method", "route", "status"],
    )
    .expect("static histogram options are valid");
    register(registry, histogram)
}

/// actix-web glue: a middleware recording [`http_requests`] and the `/metrics` handler.
#[cfg(feature = "actix")]
pub mod actix {
    use actix_web::body::MessageBody;
    use actix_web::dev::{ServiceRequest, ServiceResponse};
    use actix_web::middleware::Next;
    use actix_web::{HttpResponse, web};
    use prometheus::{HistogramVec, Registry};

    /// A service's registry and its HTTP histogram, shared as app data.
    #[derive(Clone)]
    pub struct HttpMetrics {
        pub registry: Registry,
        pub requests: HistogramVec,
    }

    impl HttpMetrics {
        pub fn new(registry: Registry) -> Self {
            let requests = super::http_requests(&registry);
            Self { registry, requests }
        }
    }

    /// Middleware (`actix_web::middleware::from_fn(observe)`): latency by method, matched
    /// route template and status. Needs `web::Data<HttpMetrics>` registered on the app.
    pub async fn observe(
        request: ServiceRequest,
        next: Next<impl MessageBody>,
    ) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
        let metrics = request.app_data::<web::Data<HttpMetrics>>().cloned();
        let method = request.method().to_string();
        let started = std::time::Instant::now();
        let response = next.call(request).await?;
        if let Some(metrics) = metrics {
            let route = response
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_string());
            metrics
                .requests
                .with_label_values(&[method.as_str(), route.as_str(), response.status().as_str()])
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(response)
    }

    /// `GET /metrics`.
    pub async fn endpoint(metrics: web::Data<HttpMetrics>) -> HttpResponse {
        HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(super::render(&metrics.registry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_histogram_renders_in_the_text_format() {
        let registry = Registry::new();
        let http = http_requests(&registry);
        http.with_label_values(&["GET", "/health/live", "200"])
            .observe(0.002);
        let text = render(&registry);
        assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
        assert!(text.contains(r#"route="/health/live""#));
    }
}
