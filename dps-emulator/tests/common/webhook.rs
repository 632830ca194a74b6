//! A custom allocation webhook for the tests: a hyper server on an ephemeral loopback port that
//! records every request and answers each as the test says.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the webhook received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path_and_query: String,
    pub content_type: String,
    pub body: Value,
}

/// How the webhook answers a request: status, body, and a delay before answering.
type Answerer = dyn Fn(&Value) -> (u16, String, Duration) + Send + Sync;

/// A local webhook: records each request and answers it with `answer`.
pub struct Webhook {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Webhook {
    pub async fn start(
        answer: impl Fn(&Value) -> (u16, String, Duration) + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answer: Arc<Answerer> = Arc::new(answer);
        let rec = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let rec = rec.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let rec = rec.clone();
                        let answer = answer.clone();
                        async move {
                            let method = req.method().to_string();
                            let path_and_query = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            let bytes = req.into_body().collect().await?.to_bytes();
                            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            let (status, text, delay) = answer(&body);
                            rec.lock().unwrap().push(Received {
                                method,
                                path_and_query,
                                content_type,
                                body,
                            });
                            tokio::time::sleep(delay).await;
                            let mut resp = Response::new(Full::new(Bytes::from(text)));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            resp.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, received }
    }

    /// A webhook answering 200 with `body` at once.
    pub async fn answering(body: Value) -> Self {
        Self::start(move |_| (200, body.to_string(), Duration::ZERO)).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}
