//! What every HTTP client of a peer (CML, the Control Plane API) shares, because a peer may be
//! hostile or broken: no redirects (a redirect would send our credentials or requests wherever
//! the peer likes), timeouts, and a cap on how much of an answer is read into memory.

use std::time::Duration;

use reqwest::{ClientBuilder, Response, redirect::Policy};

/// The most of an answer read into memory: far above any answer the contracts describe.
pub const MAX_ANSWER: usize = 1 << 20;

/// A client builder with the shared policy: no redirects, `timeout` for connect and request.
pub fn client_builder(timeout: Duration) -> ClientBuilder {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
}

/// Why an answer's body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than the cap: refused from its `Content-Length`, or cut off while reading.
    TooLarge { declared: Option<u64> },
    /// The connection failed while reading.
    Transport(reqwest::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge {
                declared: Some(len),
            } => write!(
                f,
                "an answer of {len} bytes is larger than the {MAX_ANSWER} the controller reads"
            ),
            BodyError::TooLarge { declared: None } => write!(
                f,
                "the answer went on past the {MAX_ANSWER} bytes the controller reads"
            ),
            BodyError::Transport(e) => write!(f, "{e}"),
        }
    }
}

/// The body, read up to [`MAX_ANSWER`]: a declared length beyond it is refused before reading,
/// and a body that grows beyond it is cut off.
pub async fn capped_body(response: Response) -> Result<Vec<u8>, BodyError> {
    read_capped(response, MAX_ANSWER).await
}

async fn read_capped(mut response: Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if let Some(len) = response.content_length()
        && len > cap as u64
    {
        return Err(BodyError::TooLarge {
            declared: Some(len),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge { declared: None });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
