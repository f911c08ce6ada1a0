//! One HTTP/1.1 exchange over a fresh connection, as the registry client and the local API's
//! client make them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// The HTTP exchange failed.
    #[error("HTTP")]
    Http(#[source] hyper::Error),
    /// The response body could not be read (or was longer than allowed).
    #[error("reading the response")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Sends `req` over a fresh HTTP/1.1 connection on `io` and reads the whole response, at most
/// `max_body` bytes of it.
pub(crate) async fn exchange<IO>(
    io: IO,
    req: Request<Full<Bytes>>,
    max_body: usize,
) -> Result<(StatusCode, Bytes), ExchangeError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(ExchangeError::Http)?;
    let conn = tokio::spawn(conn);
    let result = async {
        let res = sender
            .send_request(req)
            .await
            .map_err(ExchangeError::Http)?;
        let status = res.status();
        let body = Limited::new(res.into_body(), max_body)
            .collect()
            .await
            .map_err(ExchangeError::Body)?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    conn.abort();
    result
}
