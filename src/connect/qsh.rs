//! Query string hash (QSH): binds a Connect JWT to one HTTP method, path and query (docs/protocol.md#query-string-hash-qsh).
//!
//! Implemented here rather than taken from a crate because the only Rust crate found gets the
//! canonical form wrong (`atlassian-app-auth` 0.7: names not encoded, repeats not merged, `jwt` kept), and a single differing byte turns every product request into a
//! 401. The rules follow Atlassian's Java implementation, which the Connect-generated interop
//! vectors in `tests/fixtures/qsh-vectors.json` confirm.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The literal `qsh` of context JWTs (`AP.context.getToken()`): such tokens are deliberately not bound
/// to a URL, so endpoints must opt in to them explicitly.
pub const CONTEXT_QSH: &str = "context-qsh";

/// RFC 3986 unreserved characters stay as they are; everything else is escaped. This is the OAuth 1.0
/// rule Atlassian uses, and differs from form encoding (`+` for space) and from `encodeURIComponent`
/// (which keeps `!'()*`).
const QSH_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(s: &str) -> Cow<'_, str> {
    utf8_percent_encode(s, QSH_ENCODE_SET).into()
}

/// Decodes like `application/x-www-form-urlencoded`, because that is how the Java reference reads the
/// query: `+` is a space, so a literal plus only survives as `%2B`. Invalid UTF-8 is replaced rather
/// than rejected so that a hostile query cannot make hashing fail; such a request simply will not
/// match any honest signature.
pub(crate) fn form_decode(s: &str) -> String {
    let spaced: Cow<'_, str> = if s.contains('+') {
        Cow::Owned(s.replace('+', " "))
    } else {
        Cow::Borrowed(s)
    };
    percent_decode(spaced.as_bytes())
        .decode_utf8_lossy()
        .into_owned()
}

/// [`form_decode`] that borrows when there is nothing to decode (no `+`, no `%`), the common
/// case for query names and values.
pub(crate) fn form_decode_cow(s: &str) -> Cow<'_, str> {
    if s.contains(['+', '%']) {
        Cow::Owned(form_decode(s))
    } else {
        Cow::Borrowed(s)
    }
}

/// Java's `String.compareTo`: by UTF-16 code units. For ASCII that is byte order.
fn java_string_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.cmp(b)
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

/// The canonical URI (docs/protocol.md#query-string-hash-qsh): the raw path relative to the base path, one trailing slash removed,
/// `&` escaped so that a path cannot be confused with a query.
///
/// The base path is removed only at a segment boundary, so a base of `/acme` leaves `/acmex/…`
/// untouched (atlassian-jwt-js does a plain prefix test, which would strip it).
pub fn canonical_path(path: &str, base_path: &str) -> String {
    let trimmed_base = base_path.trim_end_matches('/');
    let base: Cow<'_, str> = if trimmed_base.is_empty() || trimmed_base.starts_with('/') {
        Cow::Borrowed(trimmed_base)
    } else {
        Cow::Owned(format!("/{trimmed_base}"))
    };

    let mut p = path;
    if !base.is_empty()
        && let Some(rest) = p.strip_prefix(base.as_ref())
        && (rest.is_empty() || rest.starts_with('/'))
    {
        p = rest;
    }
    if let Some(stripped) = p.strip_suffix('/') {
        p = stripped;
    }
    if p.is_empty() {
        return "/".to_owned();
    }
    let escaped = p.replace('&', "%26");
    if escaped.starts_with('/') {
        escaped
    } else {
        format!("/{escaped}")
    }
}

/// The canonical query (docs/protocol.md#query-string-hash-qsh), from the raw query string without its leading `?`.
///
/// Values of a repeated name are sorted by their *decoded* text (what Atlassian's Java code really
/// does, despite its comment) and compared by UTF-16 code units as Java's `String.compareTo` does;
/// parameters are sorted by the Java key `enc(name) + " " + enc(joined values)`, which amounts to
/// sorting by encoded name.
pub fn canonical_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    write_canonical_query(query, &mut out);
    out
}

/// A query parameter as (decoded name, decoded value).
type Param<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Appends the canonical query to `out`. Names and values are decoded and encoded without an
/// allocation unless they need it; the grouping sorts one list of pairs in place.
fn write_canonical_query(query: &str, out: &mut String) {
    // (decoded name, decoded value); the token cannot hash itself, so `jwt` is dropped by
    // decoded name, as the Java reader does.
    let mut params: Vec<Param<'_>> = query
        .split('&')
        .filter(|s| !s.is_empty())
        .filter_map(|segment| {
            let (raw_name, raw_value) = segment.split_once('=').unwrap_or((segment, ""));
            let name = form_decode_cow(raw_name);
            (name != "jwt").then(|| (name, form_decode_cow(raw_value)))
        })
        .collect();
    // Pairs of one name become adjacent, their values in Java's order.
    params.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| java_string_cmp(&a.1, &b.1)));

    // One group per name: (encoded name, its pairs). Groups are ordered by the Java key
    // `enc(name) + " " + enc(values)`; every character of an encoded name sorts after the
    // space, so that is the order of the encoded names.
    let mut groups: Vec<(Cow<'_, str>, &[Param<'_>])> = Vec::new();
    let mut rest = params.as_slice();
    while let Some((first, _)) = rest.first() {
        let len = rest.iter().take_while(|(name, _)| name == first).count();
        let (group, tail) = rest.split_at(len);
        groups.push((enc(first), group));
        rest = tail;
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));

    for (i, (enc_name, pairs)) in groups.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(enc_name);
        out.push('=');
        for (j, (_, value)) in pairs.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.extend(utf8_percent_encode(value, QSH_ENCODE_SET));
        }
    }
}

/// The canonical request `METHOD&path&query` (docs/protocol.md#query-string-hash-qsh).
///
/// `path` and `query` must be exactly as they were on the wire (not percent-decoded, query without
/// `?`), because decoding first would make `%2F` and `/` or `%26` and `&` indistinguishable.
/// `base_path` is the path of the base URL the request is relative to: the app `baseUrl` for inbound
/// requests, the product `baseUrl` (e.g. `/wiki`) for outbound ones.
pub fn canonical_request(method: &str, path: &str, query: &str, base_path: &str) -> String {
    let path = canonical_path(path, base_path);
    let mut out = String::with_capacity(method.len() + path.len() + query.len() + 2);
    out.extend(method.chars().map(|c| c.to_ascii_uppercase()));
    out.push('&');
    out.push_str(&path);
    out.push('&');
    write_canonical_query(query, &mut out);
    out
}

/// Lower-case hex SHA-256 of an already canonical request.
pub fn hash_canonical(canonical: &str) -> String {
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// The `qsh` claim value expected for a request: lower-case hex SHA-256 of the canonical request.
pub fn qsh(method: &str, path: &str, query: &str, base_path: &str) -> String {
    hash_canonical(&canonical_request(method, path, query, base_path))
}

/// Splits a URL string into its raw path and raw query (without `?`); the fragment is dropped.
///
/// Done by hand because `url::Url` normalises the path and query (e.g. re-encodes some characters),
/// which would change the hash. A string without `scheme://` is taken as path-and-query already,
/// so relative URLs such as `/rest/api/3/myself?expand=groups` work too.
pub fn split_url(url: &str) -> (&str, &str) {
    let without_fragment = url.split_once('#').map_or(url, |(before, _)| before);
    let path_and_query = match without_fragment.split_once("://") {
        Some((scheme, after)) if is_scheme(scheme) => match after.find(['/', '?']) {
            Some(i) => &after[i..],
            None => "",
        },
        _ => without_fragment,
    };
    path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""))
}

/// The raw path of a base URL such as `https://x.atlassian.net/wiki` (→ `/wiki`), for use as the
/// `base_path` of [`canonical_request`].
pub fn base_path_of(base_url: &str) -> &str {
    split_url(base_url).0
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// [`canonical_request`] for a full request URL and the base URL it is relative to.
pub fn canonical_for_url(method: &str, url: &str, base_url: &str) -> String {
    let (path, query) = split_url(url);
    canonical_request(method, path, query, base_path_of(base_url))
}

/// [`qsh`] for a full request URL and the base URL it is relative to.
pub fn qsh_for_url(method: &str, url: &str, base_url: &str) -> String {
    hash_canonical(&canonical_for_url(method, url, base_url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(url: &str) -> String {
        canonical_for_url("GET", url, "https://example.com")
    }

    #[test]
    fn empty_path_and_query() {
        assert_eq!(canon("https://example.com"), "GET&/&");
        assert_eq!(canon("https://example.com/"), "GET&/&");
        assert_eq!(
            qsh_for_url("GET", "https://example.com", "https://example.com"),
            "c88caad15a1c1a900b8ac08aa9686f4e8184539bea1deda36e2f649430df3239"
        );
    }

    #[test]
    fn names_sort_by_their_encoded_form_and_a_prefix_first() {
        // Encoded: %C3%A9, A, a, a-b, b — byte order, a name before the longer names it starts.
        assert_eq!(
            canonical_query("b=2&a-b=3&a=1&%C3%A9=x&A=y&c=b&c=a&jwt=t"),
            "%C3%A9=x&A=y&a=1&a-b=3&b=2&c=a,b"
        );
        // Values of one name sort by Java's UTF-16 order: U+FF5E (one unit, 0xFF5E) after
        // U+1F600 (surrogates, 0xD83D…), although its UTF-8 bytes sort first.
        assert_eq!(
            canonical_query("v=%EF%BD%9E&v=%F0%9F%98%80"),
            "v=%F0%9F%98%80,%EF%BD%9E"
        );
    }

    #[test]
    fn method_is_upper_cased() {
        assert_eq!(canonical_request("post", "/x", "", ""), "POST&/x&");
    }

    #[test]
    fn base_path_is_segment_aware() {
        assert_eq!(canonical_path("/acme/panel", "/acme"), "/panel");
        assert_eq!(canonical_path("/acme", "/acme"), "/");
        assert_eq!(canonical_path("/acme/", "/acme/"), "/");
        assert_eq!(canonical_path("/acmex/panel", "/acme"), "/acmex/panel");
        assert_eq!(canonical_path("/other/acme/x", "/acme"), "/other/acme/x");
        assert_eq!(canonical_path("/panel", ""), "/panel");
        assert_eq!(canonical_path("/panel", "/"), "/panel");
        assert_eq!(canonical_path("/wiki/rest/api", "wiki"), "/rest/api");
        assert_eq!(
            canonical_for_url(
                "GET",
                "https://x.atlassian.net/wiki/rest/api/content?limit=1",
                "https://x.atlassian.net/wiki/"
            ),
            "GET&/rest/api/content&limit=1"
        );
    }

    #[test]
    fn exactly_one_trailing_slash_removed() {
        assert_eq!(canonical_path("/a/b/", ""), "/a/b");
        assert_eq!(canonical_path("/a/b//", ""), "/a/b/");
        assert_eq!(canonical_path("//", ""), "/");
    }

    #[test]
    fn ampersand_in_path_is_escaped_and_path_stays_raw() {
        assert_eq!(
            canonical_request("GET", "/a&b=c", "x=y", ""),
            "GET&/a%26b=c&x=y"
        );
        assert_eq!(
            canonical_request("GET", "/project/A%26B", "", ""),
            "GET&/project/A%26B&"
        );
        assert_eq!(
            canonical_request("GET", "/path!$'()*+,;=", "", ""),
            "GET&/path!$'()*+,;=&"
        );
    }

    #[test]
    fn plus_and_percent20_are_both_space() {
        assert_eq!(canonical_query("p=a+b"), "p=a%20b");
        assert_eq!(canonical_query("p=a%20b"), "p=a%20b");
        assert_eq!(canonical_query("some+name=x"), "some%20name=x");
    }

    #[test]
    fn literal_plus_only_as_percent_2b() {
        assert_eq!(canonical_query("p=1%2B1"), "p=1%2B1");
        assert_eq!(canonical_query("p=1%2b1"), "p=1%2B1");
    }

    #[test]
    fn reserved_and_unreserved_characters() {
        assert_eq!(canonical_query("q=connect*"), "q=connect%2A");
        assert_eq!(canonical_query("q=connect%2a"), "q=connect%2A");
        assert_eq!(canonical_query("u=~admin"), "u=~admin");
        assert_eq!(canonical_query("u=%7Eadmin"), "u=~admin");
        assert_eq!(canonical_query("k=-._~"), "k=-._~");
        assert_eq!(canonical_query("k=!'()"), "k=%21%27%28%29");
        assert_eq!(canonical_query("k=a%2Fb%3Ac"), "k=a%2Fb%3Ac");
        assert_eq!(canonical_query("k=%25"), "k=%25");
    }

    #[test]
    fn repeated_keys_grouped_and_sorted_by_decoded_value() {
        assert_eq!(
            canonical_query("ids=-1&ids=1&ids=20&ids=2&ids=10"),
            "ids=-1,1,10,2,20"
        );
        // Decoded `.` (0x2E) sorts before decoded `:` (0x3A); encoded `%3A` would sort first.
        assert_eq!(
            canonical_query("ids=%3A1&ids=.2&ids=%3A2&ids=.1"),
            "ids=.1,.2,%3A1,%3A2"
        );
        // A comma inside a value stays encoded; the joining comma does not.
        assert_eq!(canonical_query("t=1%2C2&t=0"), "t=0,1%2C2");
    }

    #[test]
    fn names_sorted_case_sensitively_by_encoded_name() {
        assert_eq!(canonical_query("b=b&a=a&B=B&A=A"), "A=A&B=B&a=a&b=b");
        assert_eq!(
            canonical_query("a10=1&a1=2&b1=3&b10=4"),
            "a1=2&a10=1&b1=3&b10=4"
        );
        // Java order: encoded `a%3A` < `a0`, whereas raw `a0` < `a:`.
        assert_eq!(canonical_query("a0=y&a%3A=x"), "a%3A=x&a0=y");
    }

    #[test]
    fn empty_and_valueless_parameters() {
        assert_eq!(canonical_query("user_id="), "user_id=");
        assert_eq!(canonical_query("a"), "a=");
        assert_eq!(canonical_query("a=b&"), "a=b");
        assert_eq!(canonical_query("&&a=b&&"), "a=b");
        assert_eq!(canonical_query("c=&c=+&c=%2520&c=%2B"), "c=,%20,%2520,%2B");
        assert_eq!(canonical_query("k=a=b"), "k=a%3Db");
    }

    #[test]
    fn jwt_parameter_dropped() {
        assert_eq!(canonical_query("jwt=a.b.c&x=1"), "x=1");
        assert_eq!(canonical_query("jwt=a.b.c"), "");
        assert_eq!(canonical_query("JWT=a&x=1"), "JWT=a&x=1");
    }

    #[test]
    fn unicode_is_utf8_percent_encoded_upper_case() {
        assert_eq!(
            canonical_query("director=%e5%ae%ae%e5%b4%8e%20%e9%a7%bf"),
            "director=%E5%AE%AE%E5%B4%8E%20%E9%A7%BF"
        );
        assert_eq!(canonical_query("d=宮"), "d=%E5%AE%AE");
    }

    #[test]
    fn invalid_utf8_and_bad_escapes_do_not_panic() {
        assert_eq!(canonical_query("x=%FF"), "x=%EF%BF%BD");
        assert_eq!(canonical_query("x=%zz&y=%"), "x=%25zz&y=%25");
    }

    #[test]
    fn split_url_keeps_raw_text() {
        assert_eq!(split_url("https://h/a%2Fb?x=a+b#frag"), ("/a%2Fb", "x=a+b"));
        assert_eq!(split_url("https://h?x=1"), ("", "x=1"));
        assert_eq!(split_url("https://h"), ("", ""));
        assert_eq!(split_url("http://h:80/p/"), ("/p/", ""));
        assert_eq!(
            split_url("/rest/api?u=http://x"),
            ("/rest/api", "u=http://x")
        );
        assert_eq!(
            split_url("https://h/j/p/jira&a=b&c=d?x=y"),
            ("/j/p/jira&a=b&c=d", "x=y")
        );
        assert_eq!(base_path_of("https://x.atlassian.net/wiki"), "/wiki");
    }

    #[test]
    fn confluence_search_example_from_spec() {
        let url =
            "https://example.com/wiki/rest/api/search?cql=title~%22%2A%22+and+type%3Dpage&limit=10";
        let base = "https://example.com/wiki";
        assert_eq!(
            canonical_for_url("GET", url, base),
            "GET&/rest/api/search&cql=title~%22%2A%22%20and%20type%3Dpage&limit=10"
        );
        assert_eq!(
            qsh_for_url("GET", url, base),
            "eb04d45dfbeafaa61923d8ac24b849b593a0c4b82c6f42c0aa0c8546dee33500"
        );
    }

    #[test]
    fn qsh_is_lower_hex_sha256() {
        let q = qsh("GET", "/test", "param=value&jwt=x", "");
        assert_eq!(
            q,
            "be16910858a41fd19ea5c1b4e9decca9a784d1024cb00b2158defe2f29dc86dd"
        );
    }
}
