//! A read-only HTTP endpoint that serves one text document (the agent's
//! Prometheus metrics), with the same hyper stack as the server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;

use rewind_core::{Error, Result};

/// Renders the document at each request.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Listens on `listen` (bound before this returns, so a taken address is
/// an error here) and answers `GET path` with `render()` as
/// `text/plain; version=0.0.4`, anything else with 404, on a thread of its
/// own until the process ends.
pub fn serve_text(listen: SocketAddr, path: &'static str, render: Render) -> Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(listen)
        .map_err(|e| Error::io(format!("listen on {listen}"), e))?;
    let local = std_listener
        .local_addr()
        .map_err(|e| Error::io("local address", e))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("set non-blocking", e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start a runtime", e))?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                return;
            };
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let render = render.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let render = render.clone();
                            async move {
                                let ok =
                                    req.method() == hyper::Method::GET && req.uri().path() == path;
                                let resp = if ok {
                                    hyper::Response::builder()
                                        .header("content-type", "text/plain; version=0.0.4")
                                        .body(Full::new(Bytes::from(render())))
                                } else {
                                    hyper::Response::builder()
                                        .status(404)
                                        .body(Full::new(Bytes::from(format!("only GET {path}\n"))))
                                };
                                Ok::<_, Infallible>(resp.expect("a static response"))
                            }
                        },
                    );
                    let mut builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    builder
                        .http1()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30));
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
    });
    Ok(local)
}
