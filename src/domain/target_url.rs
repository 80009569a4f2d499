//! The address an advert sends people to. Validated on the raw text and stored unchanged, because
//! the redirect echoes it byte for byte in `Location` and must not depend on any parser's idea of
//! normalisation.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use url::{Host, Url};

/// A target URL that is safe to put verbatim into a `Location` header: absolute http(s), ASCII
/// only, no credentials, a real host name.
///
/// Deserialising goes through the same validation, so a stored advert can never carry a URL
/// that `parse` would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TargetUrl(String);

/// Why a target URL was refused. Every message says what the customer should change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetUrlError {
    #[error("the link is empty; enter a full address such as https://example.com/page")]
    Empty,
    #[error(
        "the link is {len} bytes long but at most {max} are allowed; shorten it, for example by \
         dropping query parameters the page does not need",
        max = TargetUrl::MAX_LEN
    )]
    TooLong { len: usize },
    /// `position` counts characters from 1.
    #[error(
        "the link contains an invisible control character ({}) at character {position}; \
         retype the link without it, or percent-encode it if it is really part of the address",
        code_point(.character)
    )]
    ControlCharacter { position: usize, character: char },
    /// `position` counts characters from 1.
    #[error(
        "the link contains a space ({}) at character {position}; remove it, or write it as %20 \
         if it really belongs in the path",
        code_point(.character)
    )]
    Whitespace { position: usize, character: char },
    /// `position` counts characters from 1.
    #[error(
        "the link contains a backslash (\\) at character {position}; use a forward slash (/), \
         or write it as %5C if it really belongs in the path"
    )]
    Backslash { position: usize },
    #[error("{}", non_ascii_message(.suggestion))]
    NonAscii { suggestion: Option<String> },
    #[error("{}", scheme_message(.scheme))]
    Scheme { scheme: Option<String> },
    #[error(
        "the link is not a full address; it must start with https:// or http:// followed by the \
         site name, for example https://example.com/page"
    )]
    Relative,
    #[error("the link is not a valid web address ({reason}); check it for typos")]
    Malformed { reason: String },
    #[error("the link has no site name after the //; write it like https://example.com/page")]
    NoHost,
    #[error(
        "the link contains a user name or password before an @ sign, which hides where it really \
         leads; remove everything between // and @"
    )]
    Userinfo,
    #[error("{reason}; check the site name")]
    HostTooLong { reason: String },
    #[error("the site name {host:?} cannot be used: {reason}")]
    BadHost { host: String, reason: &'static str },
    #[error(
        "the port {port:?} is not valid; use a number from 1 to 65535, or leave the port out \
         (together with its colon)"
    )]
    BadPort { port: String },
}

impl TargetUrlError {
    /// A stable identifier for API clients and metrics; messages may be reworded, codes not.
    pub fn code(&self) -> &'static str {
        match self {
            TargetUrlError::Empty => "empty",
            TargetUrlError::TooLong { .. } => "too_long",
            TargetUrlError::ControlCharacter { .. } => "control_character",
            TargetUrlError::Whitespace { .. } => "whitespace",
            TargetUrlError::Backslash { .. } => "backslash",
            TargetUrlError::NonAscii { .. } => "non_ascii",
            TargetUrlError::Scheme { .. } => "scheme",
            TargetUrlError::Relative => "relative",
            TargetUrlError::Malformed { .. } => "malformed",
            TargetUrlError::NoHost => "no_host",
            TargetUrlError::Userinfo => "userinfo",
            TargetUrlError::HostTooLong { .. } => "host_too_long",
            TargetUrlError::BadHost { .. } => "bad_host",
            TargetUrlError::BadPort { .. } => "bad_port",
        }
    }
}

impl TargetUrl {
    pub const MAX_LEN: usize = 2048;

    /// Validates `raw` exactly as given: nothing is trimmed, decoded or re-serialised, so what
    /// was checked is what the redirect will send.
    pub fn parse(raw: &str) -> Result<TargetUrl, TargetUrlError> {
        validate(raw)?;
        Ok(TargetUrl(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl TryFrom<String> for TargetUrl {
    type Error = TargetUrlError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        validate(&raw)?;
        Ok(TargetUrl(raw))
    }
}

impl<'de> Deserialize<'de> for TargetUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        TargetUrl::try_from(raw).map_err(serde::de::Error::custom)
    }
}

impl AsRef<str> for TargetUrl {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Shared by `parse` and deserialisation. The checks run in a fixed order so that a link with
/// several problems always reports the same one.
fn validate(raw: &str) -> Result<(), TargetUrlError> {
    if raw.is_empty() {
        return Err(TargetUrlError::Empty);
    }
    if raw.len() > TargetUrl::MAX_LEN {
        return Err(TargetUrlError::TooLong { len: raw.len() });
    }
    check_characters(raw)?;
    let after_colon = check_scheme(raw)?;
    let authority = check_slashes(raw, after_colon)?;
    // The parser reports an empty userinfo (`https://@host`) as no userinfo at all, yet the
    // `@` still lets a link look like it goes somewhere it does not, so look at the raw text.
    if authority.contains('@') {
        return Err(TargetUrlError::Userinfo);
    }
    let port = raw_port(authority);

    let url = Url::parse(raw).map_err(|error| match (error, port) {
        (url::ParseError::EmptyHost, _) => TargetUrlError::NoHost,
        (url::ParseError::InvalidPort, Some(port)) => TargetUrlError::BadPort {
            port: port.to_owned(),
        },
        (error, _) => TargetUrlError::Malformed {
            reason: error.to_string(),
        },
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetUrlError::Userinfo);
    }
    match url.host() {
        None => return Err(TargetUrlError::NoHost),
        Some(Host::Domain("")) => return Err(TargetUrlError::NoHost),
        Some(Host::Domain(domain)) => check_domain(domain)?,
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => {}
    }
    if let Some(port) = port {
        check_port(port)?;
    }
    Ok(())
}

/// Character-level rules, each as its own pass so that the reported problem does not depend on
/// where in the text the problems happen to be.
fn check_characters(raw: &str) -> Result<(), TargetUrlError> {
    // CR/LF would split the `Location` header; the rest are invisible to the customer.
    if let Some((index, character)) = raw.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(TargetUrlError::ControlCharacter {
            position: index + 1,
            character,
        });
    }
    if let Some((index, character)) = raw
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_whitespace() || is_invisible(*c))
    {
        return Err(TargetUrlError::Whitespace {
            position: index + 1,
            character,
        });
    }
    // Browsers read `\` as `/` in http(s) URLs while servers and validators may not, which is
    // how `/\evil.com` and `https:\\evil.com` slip past checks.
    if let Some(index) = raw.chars().position(|c| c == '\\') {
        return Err(TargetUrlError::Backslash {
            position: index + 1,
        });
    }
    // Header values must be ASCII; anything else would be re-encoded by someone downstream.
    if !raw.is_ascii() {
        return Err(TargetUrlError::NonAscii {
            suggestion: ascii_suggestion(raw),
        });
    }
    Ok(())
}

/// Zero-width and layout characters that are not Unicode whitespace but look like nothing or
/// like a space on screen, so a customer cannot see them in the link they pasted.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{34f}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// Offers what the customer probably meant, written the way a `Location` header needs it. Only
/// offered when that rewrite would itself be accepted, so following the advice always works.
fn ascii_suggestion(raw: &str) -> Option<String> {
    let url = Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let suggestion: String = url.into();
    validate(&suggestion).ok().map(|()| suggestion)
}

/// Returns the text after the scheme's colon, provided the scheme is http or https.
fn check_scheme(raw: &str) -> Result<&str, TargetUrlError> {
    let first_delimiter = raw.find([':', '/', '?', '#']);
    let colon = match first_delimiter {
        Some(index) if index > 0 && raw.as_bytes()[index] == b':' => index,
        Some(0) if raw.starts_with(':') => {
            return Err(TargetUrlError::Scheme { scheme: None });
        }
        _ => return Err(TargetUrlError::Relative),
    };
    let scheme = &raw[..colon];
    if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http") {
        return Ok(&raw[colon + 1..]);
    }
    let nameable = scheme
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    Err(TargetUrlError::Scheme {
        scheme: nameable.then(|| scheme.to_owned()),
    })
}

/// Browsers repair `https:/host` and `https:///host` in ways other software does not, so the
/// same link could lead to different places; insist on the one unambiguous form. Returns the
/// authority (between `//` and the path, query or fragment).
fn check_slashes<'a>(raw: &str, after_colon: &'a str) -> Result<&'a str, TargetUrlError> {
    let slashes = after_colon.bytes().take_while(|b| *b == b'/').count();
    if slashes != 2 {
        let scheme_len = raw.len() - after_colon.len();
        return Err(TargetUrlError::Malformed {
            reason: format!(
                "exactly two slashes must follow {:?}, found {slashes}",
                &raw[..scheme_len]
            ),
        });
    }
    let rest = &after_colon[2..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Ok(&rest[..end])
}

/// The port exactly as written, if the authority has a colon after the host. The parser hides
/// an explicitly written default port and an empty one, so it cannot be asked instead.
fn raw_port(authority: &str) -> Option<&str> {
    let after_host = if authority.starts_with('[') {
        let close = authority.find(']')?;
        &authority[close + 1..]
    } else {
        let colon = authority.find(':')?;
        &authority[colon..]
    };
    after_host.strip_prefix(':')
}

fn check_port(port: &str) -> Result<(), TargetUrlError> {
    // Digits only: `str::parse` would also take a leading `+`.
    let valid = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|n| n != 0);
    if valid {
        Ok(())
    } else {
        Err(TargetUrlError::BadPort {
            port: port.to_owned(),
        })
    }
}

/// DNS limits plus the rules that keep a link pointing at a public, unambiguous name.
fn check_domain(domain: &str) -> Result<(), TargetUrlError> {
    // A single trailing dot is the fully qualified spelling of the same name.
    let name = domain.strip_suffix('.').unwrap_or(domain);
    if name.len() > 253 {
        return Err(TargetUrlError::HostTooLong {
            reason: format!(
                "the site name is {} characters long but at most 253 are allowed",
                name.len()
            ),
        });
    }
    if let Some(label) = name.split('.').find(|label| label.len() > 63) {
        return Err(TargetUrlError::HostTooLong {
            reason: format!(
                "the part {label:?} of the site name is {} characters long but each part between \
                 dots may have at most 63",
                label.len()
            ),
        });
    }
    let bad_host = |reason| TargetUrlError::BadHost {
        host: domain.to_owned(),
        reason,
    };
    if name.split('.').any(str::is_empty) {
        return Err(bad_host("it has an empty part between two dots"));
    }
    if !name.contains('.') && name != "localhost" {
        return Err(bad_host(
            "it is not a full domain name; use one with a dot, such as example.com",
        ));
    }
    // The parser leaves through punctuation such as `'`, `*` or `{`, which no real host name
    // contains and which only serve to confuse people reading the link.
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad_host(
            "it may only contain letters, digits, hyphens and dots",
        ));
    }
    Ok(())
}

fn code_point(c: &char) -> String {
    format!("U+{:04X}", u32::from(*c))
}

fn non_ascii_message(suggestion: &Option<String>) -> String {
    let advice = "the link contains characters outside plain ASCII, which cannot be sent in a \
                  redirect; percent-encode them in the path and query (for example %D0%BF) and \
                  write an international site name in punycode (xn--...)";
    match suggestion {
        Some(suggestion) => format!("{advice}; the encoded form of this link is {suggestion}"),
        None => advice.to_owned(),
    }
}

fn scheme_message(scheme: &Option<String>) -> String {
    let rule = "the link must start with https:// or http://";
    match scheme {
        Some(scheme) => format!("{rule}; \"{scheme}:\" links are not allowed"),
        None => rule.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &str) -> TargetUrlError {
        match TargetUrl::parse(raw) {
            Ok(url) => panic!("{raw:?} was accepted as {url:?}"),
            Err(error) => error,
        }
    }

    fn assert_accepted(raw: &str) {
        match TargetUrl::parse(raw) {
            Ok(url) => assert_eq!(url.as_str(), raw),
            Err(error) => panic!("{raw:?} was refused: {error}"),
        }
    }

    macro_rules! assert_refused {
        ($raw:expr, $pattern:pat $(if $guard:expr)?) => {{
            let raw: &str = $raw;
            let error = refused(raw);
            assert!(
                matches!(&error, $pattern $(if $guard)?),
                "{raw:?} gave {error:?}, expected {}",
                stringify!($pattern)
            );
            error
        }};
    }

    #[test]
    fn accepts_ordinary_links() {
        for raw in [
            "https://example.com",
            "http://example.com/path?q=1#frag",
            "HTTPS://EXAMPLE.COM/A",
            "https://127.0.0.1:8443/x",
            "https://[::1]/",
            "https://[::1]:8443/x",
            "https://sub.example.co.uk/a%20b",
            "http://localhost:3000/",
            "https://example.com/%0d%0a",
            "https://example.com./",
            "https://example.com:443/",
            "https://example.com:65535/",
            "https://xn--e1afmkfd.xn--p1ai/%D0%BF",
            "https://my_host.example.com/",
        ] {
            assert_accepted(raw);
        }
    }

    #[test]
    fn keeps_the_raw_text() {
        let raw = "HTTPS://Example.COM/Path?";
        let url = TargetUrl::parse(raw).ok();
        assert_eq!(url.as_ref().map(TargetUrl::as_str), Some(raw));
        assert_eq!(url.as_ref().map(|u| u.as_ref()), Some(raw));
        assert_eq!(url.as_ref().map(ToString::to_string), Some(raw.to_owned()));
        assert_eq!(url.map(TargetUrl::into_inner), Some(raw.to_owned()));
    }

    #[test]
    fn serialises_as_the_raw_string() {
        let url = TargetUrl::parse("HTTPS://example.com/?").ok();
        assert_eq!(
            url.and_then(|u| serde_json::to_string(&u).ok()),
            Some("\"HTTPS://example.com/?\"".to_owned())
        );
    }

    #[test]
    fn deserialises_through_validation() {
        let url: Option<TargetUrl> = serde_json::from_str("\"HTTPS://example.com/?\"").ok();
        assert_eq!(
            url.as_ref().map(TargetUrl::as_str),
            Some("HTTPS://example.com/?")
        );
        let error = serde_json::from_str::<TargetUrl>("\"javascript:alert(1)\"")
            .err()
            .map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("https://")),
            "{error:?}"
        );
        assert_eq!(
            TargetUrl::try_from(String::from("//evil.com")),
            Err(TargetUrlError::Relative)
        );
    }

    #[test]
    fn empty_and_too_long() {
        assert_refused!("", TargetUrlError::Empty);
        let base = "https://example.com/";
        let at_limit = format!("{base}{}", "a".repeat(TargetUrl::MAX_LEN - base.len()));
        assert_accepted(&at_limit);
        let over = format!("{at_limit}a");
        assert_eq!(over.len(), 2049);
        assert_refused!(&over, TargetUrlError::TooLong { len: 2049 });
    }

    #[test]
    fn control_characters() {
        let error = assert_refused!(
            "https://example.com/\r\nSet-Cookie:x=1",
            TargetUrlError::ControlCharacter {
                position: 21,
                character: '\r'
            }
        );
        assert!(error.to_string().contains("U+000D"), "{error}");
        assert!(error.to_string().contains("21"), "{error}");
        assert_refused!(
            "java\tscript:alert(1)",
            TargetUrlError::ControlCharacter { position: 5, .. }
        );
        assert_refused!(
            "https://example.com/\u{7f}",
            TargetUrlError::ControlCharacter { .. }
        );
        assert_refused!(
            "https://example.com/\0",
            TargetUrlError::ControlCharacter { .. }
        );
        assert_refused!(
            "https://example.com/\u{85}",
            TargetUrlError::ControlCharacter { .. }
        );
    }

    #[test]
    fn whitespace_is_refused_not_trimmed() {
        assert_refused!(
            " https://example.com",
            TargetUrlError::Whitespace { position: 1, .. }
        );
        assert_refused!("https://example.com ", TargetUrlError::Whitespace { .. });
        assert_refused!("https://exa mple.com", TargetUrlError::Whitespace { .. });
        assert_refused!(
            "https://example.com/\u{a0}",
            TargetUrlError::Whitespace {
                character: '\u{a0}',
                ..
            }
        );
        assert_refused!(
            "https://example.com/\u{2028}",
            TargetUrlError::Whitespace { .. }
        );
        assert_refused!(
            "https://exa\u{200b}mple.com/",
            TargetUrlError::Whitespace { .. }
        );
    }

    #[test]
    fn backslashes() {
        assert_refused!("/\\evil.com", TargetUrlError::Backslash { position: 2 });
        assert_refused!("https:\\\\evil.com", TargetUrlError::Backslash { .. });
        assert_refused!(
            "https://good.com\\@evil.com",
            TargetUrlError::Backslash { .. }
        );
    }

    #[test]
    fn non_ascii_with_suggestion() {
        let error = assert_refused!("https://пример.рф/", TargetUrlError::NonAscii { .. });
        let TargetUrlError::NonAscii { suggestion } = &error else {
            unreachable!()
        };
        assert!(
            suggestion
                .as_deref()
                .is_some_and(|s| s.starts_with("https://xn--")),
            "{suggestion:?}"
        );
        assert!(error.to_string().contains("punycode"), "{error}");
        assert!(error.to_string().contains("https://xn--"), "{error}");

        assert_eq!(
            refused("https://пример.рф/путь"),
            TargetUrlError::NonAscii {
                suggestion: Some(
                    "https://xn--e1afmkfd.xn--p1ai/%D0%BF%D1%83%D1%82%D1%8C".to_owned()
                )
            }
        );
    }

    #[test]
    fn non_ascii_without_suggestion() {
        // Would not be accepted even once encoded, so suggesting it would only mislead.
        for raw in [
            "https://пример/",
            "https://user@пример.рф/",
            "javascript:alert('ё')",
            "пример.рф",
        ] {
            assert_refused!(raw, TargetUrlError::NonAscii { suggestion: None });
        }
    }

    #[test]
    fn other_schemes() {
        for (raw, name) in [
            ("javascript:alert(1)", "javascript"),
            ("JaVaScRiPt:alert(1)", "JaVaScRiPt"),
            ("data:text/html,x", "data"),
            ("file:///etc/passwd", "file"),
            ("ftp://example.com/", "ftp"),
            ("mailto:a@example.com", "mailto"),
            ("example.com:8080/x", "example.com"),
            ("httpss://example.com", "httpss"),
        ] {
            let error = refused(raw);
            assert_eq!(
                error,
                TargetUrlError::Scheme {
                    scheme: Some(name.to_owned())
                },
                "{raw:?}"
            );
            assert!(error.to_string().contains(name), "{error}");
        }
        assert_refused!(":foo", TargetUrlError::Scheme { scheme: None });
        assert_refused!("java*script:x", TargetUrlError::Scheme { scheme: None });
    }

    #[test]
    fn relative_links() {
        for raw in [
            "//evil.com",
            "/relative/path",
            "example.com",
            "example.com/x",
            "?a",
            "#top",
            "path/with:colon",
        ] {
            assert_refused!(raw, TargetUrlError::Relative);
        }
    }

    #[test]
    fn slash_count() {
        assert_refused!("https:/example.com", TargetUrlError::Malformed { .. });
        assert_refused!("https:///example.com", TargetUrlError::Malformed { .. });
        assert_refused!("https:example.com", TargetUrlError::Malformed { .. });
    }

    #[test]
    fn parser_failures() {
        assert_refused!("https://", TargetUrlError::NoHost);
        assert_refused!("https:///", TargetUrlError::Malformed { .. });
        assert_refused!("https://?q", TargetUrlError::NoHost);
        let error = assert_refused!("https://[::1/", TargetUrlError::Malformed { .. });
        assert!(error.to_string().contains("IPv6"), "{error}");
        assert_refused!("https://exa<mple.com/", TargetUrlError::Malformed { .. });
    }

    #[test]
    fn userinfo() {
        for raw in [
            "https://user:pw@example.com",
            "https://user@example.com",
            "https://good.com@evil.com",
            "https://@evil.com",
            "https://:pw@example.com",
            "https://user@",
        ] {
            assert_refused!(raw, TargetUrlError::Userinfo);
        }
        // An `@` after the host is ordinary path or query text.
        assert_accepted("https://example.com/@user?by=a@b.c#x@y");
    }

    #[test]
    fn host_length() {
        let label = "a".repeat(63);
        let host_253 = format!("{label}.{label}.{label}.{}", "b".repeat(61));
        assert_eq!(host_253.len(), 253);
        assert_accepted(&format!("https://{host_253}/"));
        assert_accepted(&format!("https://{host_253}./"));
        let host_254 = format!("{label}.{label}.{label}.{}", "b".repeat(62));
        assert_eq!(host_254.len(), 254);
        assert_refused!(
            &format!("https://{host_254}/"),
            TargetUrlError::HostTooLong { .. }
        );
        let long_label = format!("https://{}.example.com/", "a".repeat(64));
        assert_refused!(&long_label, TargetUrlError::HostTooLong { .. });
    }

    #[test]
    fn bad_hosts() {
        for raw in [
            "https://a..b.com/",
            "https://intranet/",
            "https://example.com../",
            "https://.example.com/",
            "https://exa'mple.com/",
            "https://exa*mple.com/",
        ] {
            assert_refused!(raw, TargetUrlError::BadHost { .. });
        }
    }

    #[test]
    fn ports() {
        assert_refused!(
            "https://example.com:0/",
            TargetUrlError::BadPort { port } if port == "0"
        );
        assert_refused!(
            "https://example.com:99999/",
            TargetUrlError::BadPort { port } if port == "99999"
        );
        assert_refused!(
            "https://example.com:/",
            TargetUrlError::BadPort { port } if port.is_empty()
        );
        assert_refused!("https://example.com:8a/", TargetUrlError::BadPort { .. });
        assert_refused!(
            "https://[::1]:0/",
            TargetUrlError::BadPort { port } if port == "0"
        );
        assert_refused!("https://[::1]:65536/", TargetUrlError::BadPort { .. });
    }

    #[test]
    fn codes_are_stable() {
        let cases = [
            (TargetUrlError::Empty, "empty"),
            (TargetUrlError::TooLong { len: 0 }, "too_long"),
            (
                TargetUrlError::ControlCharacter {
                    position: 1,
                    character: '\0',
                },
                "control_character",
            ),
            (
                TargetUrlError::Whitespace {
                    position: 1,
                    character: ' ',
                },
                "whitespace",
            ),
            (TargetUrlError::Backslash { position: 1 }, "backslash"),
            (TargetUrlError::NonAscii { suggestion: None }, "non_ascii"),
            (TargetUrlError::Scheme { scheme: None }, "scheme"),
            (TargetUrlError::Relative, "relative"),
            (
                TargetUrlError::Malformed {
                    reason: String::new(),
                },
                "malformed",
            ),
            (TargetUrlError::NoHost, "no_host"),
            (TargetUrlError::Userinfo, "userinfo"),
            (
                TargetUrlError::HostTooLong {
                    reason: String::new(),
                },
                "host_too_long",
            ),
            (
                TargetUrlError::BadHost {
                    host: String::new(),
                    reason: "",
                },
                "bad_host",
            ),
            (
                TargetUrlError::BadPort {
                    port: String::new(),
                },
                "bad_port",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code);
            assert!(!error.to_string().is_empty());
        }
    }
}
