//! `/admin/*` (contract §3): provider state, routing (`/admin/models`), the kill switch,
//! reload.
//!
//! Guarded by `server.admin_key` (`Authorization: Bearer <key>`, compared in constant
//! time) or, when it is empty, answered only to loopback peers. Reading never changes what
//! a request gets: `/admin/models` peeks at the weighted rotation without advancing it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::time::Instant;

use crate::body::ResponseBody;
use crate::error::error_body;
use crate::policy::breaker::State as BreakerState;
use crate::policy::strategy;
use crate::runtime::State;

/// One provider in `GET /admin/providers`.
#[derive(Debug, Serialize)]
pub struct ProviderView<'a> {
    name: &'a str,
    state: &'static str,
    consecutive_failures: u32,
    retry_in_s: Option<f64>,
    in_flight: u32,
    queued: u32,
    connections: i64,
    ewma_latency_ms: Option<f64>,
    success_rate: Option<f64>,
    keys: Vec<KeyJson>,
}

/// One provider key in `GET /admin/providers`: never more of it than `…abcd`.
#[derive(Debug, Serialize)]
pub struct KeyJson {
    key: Box<str>,
    state: &'static str,
    retry_in_s: Option<f64>,
}

/// One target in `GET /admin/models`, with the figures behind its place in the order.
#[derive(Debug, Serialize)]
pub struct TargetView<'a> {
    target: &'a str,
    weight: u32,
    cost: Option<f64>,
    latency_ms: Option<f64>,
    success_rate: Option<f64>,
    in_flight: u32,
    score: Option<f64>,
    available: bool,
}

/// One alias in `GET /admin/models`.
#[derive(Debug, Serialize)]
pub struct ModelView<'a> {
    name: &'a str,
    strategy: &'static str,
    targets: Vec<TargetView<'a>>,
}

#[derive(Serialize)]
struct ModelsView<'a> {
    generation: u64,
    models: Vec<ModelView<'a>>,
}

#[derive(Serialize)]
struct ProvidersView<'a> {
    generation: u64,
    providers: Vec<ProviderView<'a>>,
}

/// Answers an `/admin/*` request.
pub async fn handle<B>(
    state: &Arc<State>,
    req: Request<B>,
    peer: SocketAddr,
) -> Response<ResponseBody> {
    let rt = state.runtime();
    let key = rt.config.server.admin_key.as_bytes();
    if key.is_empty() {
        if !peer.ip().is_loopback() {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "/admin/* answers loopback clients only; set server.admin_key to allow others",
            );
        }
    } else if !crate::proxy::auth::is_authorized(&[key.into()], req.headers()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "missing or invalid admin key",
        );
    }
    let path = req.uri().path().trim_end_matches('/');
    let method = req.method().clone();
    let parts: Vec<&str> = path.split('/').skip(2).collect();
    match (&method, parts.as_slice()) {
        (&Method::GET, ["providers"]) => json(StatusCode::OK, &providers(state)),
        (&Method::GET, ["models"]) => json(StatusCode::OK, &models(state, Instant::now())),
        (&Method::POST, ["providers", name, action @ ("open" | "close")]) => {
            let Some(p) = rt.providers.get(*name) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "provider_not_found",
                    &format!("no provider named {name:?}"),
                );
            };
            let transition = if *action == "open" {
                p.health.breaker.force_open()
            } else {
                p.health.breaker.force_close()
            };
            if let Some(t) = transition {
                state.telemetry.metrics.transition(&p.name, t.to);
                tracing::warn!(
                    provider = &*p.name,
                    "circuit forced {} by an operator",
                    action
                );
            }
            let s = p.health.breaker.state(Instant::now());
            json(
                StatusCode::OK,
                &serde_json::json!({"name": &*p.name, "state": s.as_str()}),
            )
        }
        (&Method::POST, ["reload"]) => {
            let s = state.clone();
            match tokio::task::spawn_blocking(move || {
                crate::runtime::reload::reload(&s, "admin API")
            })
            .await
            {
                Ok(Ok(generation)) => json(
                    StatusCode::OK,
                    &serde_json::json!({"generation": generation}),
                ),
                Ok(Err(e)) => error(StatusCode::BAD_REQUEST, "invalid_config", &e.to_string()),
                Err(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "reload_failed",
                    "the reload task failed",
                ),
            }
        }
        (_, ["providers"] | ["models"] | ["reload"] | ["providers", _, "open" | "close"]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("method {method} is not allowed here"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no admin route for {path}"),
        ),
    }
}

/// The `GET /admin/providers` document.
pub fn providers(state: &State) -> serde_json::Value {
    let rt = state.runtime();
    let now = Instant::now();
    let mut list: Vec<ProviderView<'_>> = rt
        .providers
        .values()
        .map(|p| {
            let h = &p.health;
            let s = h.breaker.state(now);
            ProviderView {
                name: &p.name,
                state: s.as_str(),
                consecutive_failures: h.breaker.consecutive_failures(),
                retry_in_s: match s {
                    BreakerState::Open => h.breaker.retry_in(now).map(|d| d.as_secs_f64()),
                    _ => None,
                },
                in_flight: h.bulkhead.in_flight(),
                queued: h.bulkhead.queued(),
                connections: h
                    .connections
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .max(0),
                ewma_latency_ms: h.stats.latency_ms(),
                success_rate: h.stats.success_rate(),
                keys: h
                    .keys
                    .view(now)
                    .into_iter()
                    .map(|k| KeyJson {
                        key: k.key,
                        state: if k.retry_in.is_some() {
                            "cooling"
                        } else {
                            "ready"
                        },
                        retry_in_s: k.retry_in.map(|d| d.as_secs_f64()),
                    })
                    .collect(),
            }
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(b.name));
    serde_json::to_value(ProvidersView {
        generation: rt.generation,
        providers: list,
    })
    .unwrap_or_default()
}

/// The `GET /admin/models` document at `now`: every alias (by name) with its targets in
/// the order a non-stream request would try them next under the alias's strategy, and the
/// figures behind that order. `latency_ms` is the estimate the strategy uses (the plain
/// EWMA times `1 + in_flight / max_concurrency`), `null` before the first sample (the
/// strategy then counts 0); `score` is `null` for `failover` and `weighted`.
pub fn models(state: &State, now: Instant) -> serde_json::Value {
    let rt = state.runtime();
    let routing = &rt.config.routing;
    let mut list: Vec<ModelView<'_>> = rt
        .models
        .values()
        .map(|route| {
            let figures = route.figures(false, routing, now);
            let order = strategy::peek_order(route.strategy, &figures, routing, &route.swrr);
            let scores = routing
                .weights(route.strategy)
                .map(|w| strategy::scores(&figures, w));
            let targets = order
                .into_iter()
                .filter_map(|i| {
                    let (t, f) = (route.targets.get(i)?, figures.get(i)?);
                    Some(TargetView {
                        target: t.label_str(),
                        weight: t.weight,
                        cost: t.cost(),
                        latency_ms: f.latency_ms.map(|_| f.latency_estimate()),
                        success_rate: f.success_rate,
                        in_flight: f.in_flight,
                        score: scores.as_ref().and_then(|s| s.get(i).copied()),
                        available: t.available(now),
                    })
                })
                .collect();
            ModelView {
                name: &route.alias,
                strategy: route.strategy.as_str(),
                targets,
            }
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(b.name));
    serde_json::to_value(ModelsView {
        generation: rt.generation,
        models: list,
    })
    .unwrap_or_default()
}

fn json(status: StatusCode, v: &impl Serialize) -> Response<ResponseBody> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(ResponseBody::full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<ResponseBody> {
    let kind = if status == StatusCode::UNAUTHORIZED {
        "authentication_error"
    } else {
        "invalid_request_error"
    };
    let mut r = Response::new(ResponseBody::full(error_body(message, kind, code)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
