//! The parts of an HTTP request that Connect verification reads, as received (not decoded):
//! the method, path and query feed the query string hash, the `Authorization` header (or the
//! `jwt` query parameter) carries the token. Built once per request by
//! [`RequestParts::new`], whatever the framework.

/// The method, path, query and `Authorization` header of a request, borrowed as received.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The raw query string (without `?`), still percent-encoded.
    pub query: &'a str,
    pub authorization: Option<&'a str>,
}

impl<'a> RequestParts<'a> {
    /// The parts of one request. `authorization` is the raw header value: a value that is not
    /// UTF-8 counts as absent. (UTF-8 validation, word-at-a-time for ASCII, rather than a
    /// visible-ASCII check byte by byte: a token is ~250 bytes on every request, and anything
    /// but base64url and dots fails to decode as a JWT afterwards anyway.)
    pub fn new(
        method: &'a str,
        path: &'a str,
        query: &'a str,
        authorization: Option<&'a [u8]>,
    ) -> Self {
        RequestParts {
            method,
            path,
            query,
            authorization: authorization.and_then(|v| std::str::from_utf8(v).ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_header_is_kept_when_it_is_utf8() {
        let p = RequestParts::new("POST", "/installed", "a=1", Some(b"JWT abc.def.ghi"));
        assert_eq!(
            (p.method, p.path, p.query, p.authorization),
            ("POST", "/installed", "a=1", Some("JWT abc.def.ghi"))
        );
        let p = RequestParts::new("GET", "/", "", Some(b"JWT \xff\xfe"));
        assert_eq!(p.authorization, None);
        assert_eq!(RequestParts::new("GET", "/", "", None).authorization, None);
    }
}
