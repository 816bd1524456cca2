//! The one builder of outbound HTTP clients: the product's license endpoint and tenant_info,
//! the Marketplace, the install-keys server and the Forge APIs all go through a client made
//! here (docs/security.md#outbound-calls).
//!
//! Redirects are followed only within the origin (scheme, host and port) of the request that
//! was sent, at most [`MAX_REDIRECTS`] times. A redirect to another origin (or one too many) is
//! not followed: the caller sees the `3xx` answer itself and treats it as any other non-success
//! status, so nothing another host says is stored. A site's `baseUrl`, the Marketplace and the key server are chosen by
//! configuration or by a signed install; a redirect is not, and following one off-origin would
//! let whoever controls it answer for them (and, for the Marketplace, learn where we call).
//!
//! Answer bodies are read with [`read_limited`] and a limit per caller: an outside server
//! decides how much it sends, and must not decide how much memory we spend on it.

use std::time::Duration;

use reqwest::redirect::{Attempt, Policy};

/// Same-origin redirects followed at most this many times per request.
pub const MAX_REDIRECTS: usize = 5;

/// The redirect policy of every outbound client: same origin only, at most [`MAX_REDIRECTS`].
pub fn redirect_policy() -> Policy {
    Policy::custom(decide)
}

fn decide(attempt: Attempt<'_>) -> reqwest::redirect::Action {
    let same_origin = attempt
        .previous()
        .first()
        .is_some_and(|first| first.origin() == attempt.url().origin());
    if !same_origin {
        tracing::info!(
            to = %attempt.url().origin().ascii_serialization(),
            "redirect to another origin not followed"
        );
        return attempt.stop();
    }
    if attempt.previous().len() > MAX_REDIRECTS {
        return attempt.stop();
    }
    attempt.follow()
}

/// A client with the service's timeouts, user agent and [`redirect_policy`].
pub fn build(connect_timeout: Duration, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    // reqwest is built without a bundled TLS provider; use ring's (pure build, no cmake).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .user_agent(concat!("connect-keeper/", env!("CARGO_PKG_VERSION")))
        .redirect(redirect_policy())
        .build()
}

/// The service's client: 5 s to connect, 10 s per request.
pub fn default_client() -> reqwest::Result<reqwest::Client> {
    build(Duration::from_secs(5), Duration::from_secs(10))
}

/// Why [`read_limited`] gave no body.
#[derive(Debug)]
pub enum BodyError {
    /// The body is longer than the limit: its `Content-Length` says so, or reading counted it.
    TooLarge,
    /// The connection failed (or timed out) while the body was read.
    Read(reqwest::Error),
}

/// Reads `res`'s body, refusing it as soon as it is known to exceed `limit` bytes: before any
/// read when `Content-Length` is larger, otherwise at the chunk that crosses the limit (a
/// chunked body announces no length). A body of exactly `limit` bytes is read.
pub async fn read_limited(mut res: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if res.content_length().is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    async fn redirecting(to: String) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/start"))
            .respond_with(ResponseTemplate::new(302).insert_header("location", to.as_str()))
            .mount(&server)
            .await;
        server
    }

    #[tokio::test]
    async fn a_redirect_to_another_origin_is_not_followed() {
        let other = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_string("from elsewhere"))
            .mount(&other)
            .await;
        let first = redirecting(format!("{}/target", other.uri())).await;
        let res = default_client()
            .unwrap()
            .get(format!("{}/start", first.uri()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302);
        assert!(other.received_requests().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_redirect_within_the_origin_is_followed() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/start"))
            .respond_with(ResponseTemplate::new(302).insert_header("location", "/target"))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/target"))
            .respond_with(ResponseTemplate::new(200).set_body_string("here"))
            .mount(&server)
            .await;
        let res = default_client()
            .unwrap()
            .get(format!("{}/start", server.uri()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), "here");
    }

    #[tokio::test]
    async fn a_redirect_loop_within_the_origin_ends() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/start"))
            .respond_with(ResponseTemplate::new(302).insert_header("location", "/start"))
            .mount(&server)
            .await;
        let res = default_client()
            .unwrap()
            .get(format!("{}/start", server.uri()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302);
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            MAX_REDIRECTS + 1
        );
    }

    async fn answering(body: &str) -> reqwest::Response {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_string(body))
            .mount(&server)
            .await;
        default_client()
            .unwrap()
            .get(server.uri())
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_body_of_exactly_the_limit_is_read() {
        let res = answering("0123456789").await;
        assert_eq!(read_limited(res, 10).await.unwrap(), b"0123456789");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let res = answering("0123456789A").await;
        assert!(matches!(
            read_limited(res, 10).await,
            Err(BodyError::TooLarge)
        ));
    }

    /// A one-request server on a plain socket that sends `chunks` as a chunked body (no
    /// `Content-Length`, which wiremock always sets), then closes.
    fn chunked_server(chunks: Vec<String>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request);
            let mut answer = String::from(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            );
            for chunk in &chunks {
                answer.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
                // Separate writes, so the client sees separate chunks.
                let _ = conn.write_all(answer.as_bytes());
                let _ = conn.flush();
                answer.clear();
            }
            let _ = conn.write_all(b"0\r\n\r\n");
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn a_chunked_body_over_the_limit_is_refused_while_reading() {
        let url = chunked_server(vec!["x".repeat(6), "y".repeat(6)]);
        let res = default_client().unwrap().get(url).send().await.unwrap();
        assert_eq!(res.content_length(), None);
        assert!(matches!(
            read_limited(res, 10).await,
            Err(BodyError::TooLarge)
        ));
    }

    #[tokio::test]
    async fn a_chunked_body_within_the_limit_is_read_whole() {
        let url = chunked_server(vec!["x".repeat(5), "y".repeat(5)]);
        let res = default_client().unwrap().get(url).send().await.unwrap();
        assert_eq!(read_limited(res, 10).await.unwrap(), b"xxxxxyyyyy");
    }
}
