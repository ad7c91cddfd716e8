//! The HTTP listener (`[http]`): Prometheus metrics, health and readiness,
//! a JSON API over topics, groups and processors, and interactive queries
//! of processor state. HTTP/1.1 by `hyper`; GET only; loopback by default.

pub mod api;
pub mod history;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::broker::Broker;

/// The web console: one page, its script and its style, embedded.
const CONSOLE_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/app.js");
const CONSOLE_CSS: &str = include_str!("console/style.css");

/// HTTP connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 256;
/// A client must send its request head within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub type Reply = Response<Full<Bytes>>;

/// Serves HTTP on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, shutdown: impl Future<Output = ()>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let history = Arc::new(history::History::default());
    let sampler = tokio::spawn(history::sample(Arc::clone(&history), Arc::clone(&broker)));
    tokio::pin!(shutdown);
    while let Some((permit, accepted)) = crate::server::accept(&listener, &limit, &mut shutdown).await {
        match accepted {
            Ok((stream, _)) => {
                let (broker, history) = (Arc::clone(&broker), Arc::clone(&history));
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (broker, history) = (Arc::clone(&broker), Arc::clone(&history));
                        async move { Ok::<_, Infallible>(route(&broker, &history, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Err(e) => crate::server::accept_failed(e).await,
        }
        while connections.try_join_next().is_some() {}
    }
    sampler.abort();
    connections.shutdown().await;
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn json(status: StatusCode, v: &serde_json::Value) -> Reply {
    let mut body = serde_json::to_vec_pretty(v).expect("JSON values serialize");
    body.push(b'\n');
    reply(status, "application/json", body)
}

pub fn error(status: StatusCode, message: &str) -> Reply {
    json(status, &serde_json::json!({ "error": message }))
}

async fn route(broker: &Arc<Broker>, history: &history::History, req: Request<Incoming>) -> Reply {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
        r.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let parts: Vec<String> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).map(percent_decode).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    // The JSON API and queries have no authentication: with ACLs on they
    // would read past them, so they are off (health and metrics stay).
    if broker.authorizer.is_some() && matches!(parts.first(), Some(&"api") | Some(&"processors")) {
        return error(StatusCode::FORBIDDEN, "the JSON API and interactive queries are off while ACLs are on (authorizer.class.name): they have no authentication; read with a Kafka client");
    }
    match parts.as_slice() {
        ["health"] => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        ["ready"] => {
            let ready = broker.ready.load(std::sync::atomic::Ordering::Acquire);
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            json(status, &serde_json::json!({ "ready": ready, "log_recovery": "done", "kafka_listener": if ready { "accepting" } else { "not accepting" } }))
        }
        ["metrics"] => {
            let b = Arc::clone(broker);
            match tokio::task::spawn_blocking(move || crate::metrics::Metrics::render(&b)).await {
                Ok(text) => reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", text),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("rendering metrics failed: {e}")),
            }
        }
        [] => reply(StatusCode::OK, "text/html; charset=utf-8", CONSOLE_HTML),
        ["console", "app.js"] => reply(StatusCode::OK, "text/javascript; charset=utf-8", CONSOLE_JS),
        ["console", "style.css"] => reply(StatusCode::OK, "text/css; charset=utf-8", CONSOLE_CSS),
        ["api", "overview"] => {
            let mut o = api::overview(broker);
            o["history"] = history.totals();
            json(StatusCode::OK, &o)
        }
        ["api", "topics", name, "records"] => match broker.topic(name) {
            Some(t) => {
                let limit = query.iter().find(|(k, _)| k == "limit").and_then(|(_, v)| v.parse::<u64>().ok()).unwrap_or(20).min(1000);
                json(StatusCode::OK, &api::records(&t, limit))
            }
            None => error(StatusCode::NOT_FOUND, &format!("no topic {name:?}")),
        },
        ["api", "topics"] => json(StatusCode::OK, &api::topics(broker)),
        ["api", "topics", name] => match broker.topic(name) {
            Some(t) => json(StatusCode::OK, &api::topic(broker, &t)),
            None => error(StatusCode::NOT_FOUND, &format!("no topic {name:?}")),
        },
        ["api", "groups"] => json(StatusCode::OK, &api::groups(broker)),
        ["api", "groups", id] => match api::group(broker, id) {
            Some(mut g) => {
                g["lag_history"] = history.lag(id);
                json(StatusCode::OK, &g)
            }
            None => error(StatusCode::NOT_FOUND, &format!("no group {id:?}")),
        },
        ["api", "processors"] => json(StatusCode::OK, &api::processors(broker)),
        ["api", "processors", name] => match api::processor(broker, name) {
            Some(p) => json(StatusCode::OK, &p),
            None => error(StatusCode::NOT_FOUND, &format!("no processor {name:?}")),
        },
        ["processors", name, "windows"] | ["api", "processors", name, "windows"] => api::windows(broker, name, &query).await,
        _ => error(StatusCode::NOT_FOUND, &format!("nothing at {path}")),
    }
}

/// `a=1&b=x%20y` → pairs, percent- and plus-decoded.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

/// Decodes `%XX` escapes (invalid ones are kept as they are; bytes that are
/// not UTF-8 become U+FFFD).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_and_plus_decoded() {
        assert_eq!(parse_query("key=user%201&from=5&x"), vec![("key".into(), "user 1".into()), ("from".into(), "5".into()), ("x".into(), "".into())]);
        assert_eq!(parse_query("key=a+b%2Bc"), vec![("key".into(), "a b+c".into())]);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%22k%22"), "\"k\"");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
