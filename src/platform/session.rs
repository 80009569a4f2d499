//! Browser sessions for the customer dashboard, and the CSRF defences of its forms.
//!
//! Signing in with an API key sets the session cookie (`__Host-reklama_session` when
//! `server.public_url` is HTTPS or TLS is on, so the browser keeps it to this host, `Secure`,
//! `Path=/`; plain `reklama_session` over plain HTTP, where a `__Host-` cookie cannot be set):
//! `v1.{customer}.{key_id}.{expiry}.{nonce}` and an HMAC-SHA256 of that text under
//! `dashboard.session_secret`, base64url (the nonce makes every sign-in, and so its CSRF token,
//! different). It carries the key's public id (the `rk_<id>` part), never its secret.
//!
//! The session also lives server-side: a `sessions` row keyed by the SHA-256 of the cookie.
//! Every request that reads a session verifies the MAC and the expiry, then asks the database,
//! in one indexed join (`sessions` ⋈ `customers` ⋈ `api_keys`), that the row is there and that
//! the key still belongs to the customer and is not revoked; the session gets the key's scope (a
//! read key's session is read-only). Signing out deletes the row, revoking the key (API,
//! dashboard) ends every session opened with it, and `reklama customer revoke` deletes the
//! customer's rows, so a copied cookie stops working at once on every instance (nothing caches
//! the answer). Preview tokens are checked against the key the same way.
//!
//! State-changing forms carry a token derived from the session (HMAC of the cookie under the
//! same secret), and POSTs whose `Origin` is present and not the service's own are refused.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain::{AdvertId, CustomerId};
use crate::platform::auth::Scope;
use crate::platform::auth::{AuthError, Customer, Customers};
use crate::platform::db::schema::{api_keys, customers, sessions};
use crate::platform::db::{Db, DbError, now_ms};
use crate::platform::tokens::{is_base62, random_base62, sha256_hex};

type HmacSha256 = Hmac<Sha256>;

/// The cookie's name over plain HTTP.
pub const COOKIE_NAME: &str = "reklama_session";
/// The cookie's name over HTTPS: the prefix makes browsers accept it only with `Secure`,
/// `Path=/` and no `Domain`, so no other host (a sibling subdomain) can set or shadow it.
pub const SECURE_COOKIE_NAME: &str = "__Host-reklama_session";
const VERSION: &str = "v1";
/// Random characters that tell two sign-ins of the same key apart.
const NONCE_LEN: usize = 16;
/// Longer than any genuine cookie; anything longer is not parsed at all.
const MAX_COOKIE_LEN: usize = 256;

/// `[dashboard]` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// Signs session cookies and CSRF tokens. Empty: a random key per process (sessions end when
    /// it restarts, and each instance of several would refuse the others' cookies).
    pub session_secret: String,
    /// How long a sign-in lasts.
    pub session_ttl_secs: u64,
}

impl SessionSettings {
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(60..=30 * 86_400).contains(&self.session_ttl_secs) {
            problems.push("dashboard.session_ttl_secs: must be 60 to 2592000 (30 days)".to_owned());
        }
        problems.extend(crate::platform::tokens::secret_problem(
            "dashboard.session_secret",
            &self.session_secret,
        ));
        problems
    }
}

/// A signed-in browser, checked against the database on this request.
#[derive(Debug, Clone)]
pub struct Session {
    pub customer: Customer,
    /// The public id of the API key the customer signed in with.
    pub key_id: String,
    /// Unix seconds.
    pub expires_at: i64,
    csrf: String,
    /// The SHA-256 of the cookie: the session's row.
    id_hash: String,
}

impl Session {
    /// The token every state-changing form of this session carries.
    pub fn csrf_token(&self) -> &str {
        &self.csrf
    }
}

/// What a cookie says, once its MAC and expiry are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claims {
    customer: CustomerId,
    key_id: String,
    expires_at: i64,
}

/// Issues and checks session cookies and CSRF tokens.
pub struct Sessions {
    keyed: HmacSha256,
    customers: Customers,
    db: Db,
    ttl: Duration,
    secure: bool,
    cookie_name: &'static str,
    /// `scheme://host[:port]` of `server.public_url`.
    origin: String,
}

impl Sessions {
    /// `tls` says this server speaks HTTPS itself; a `public_url` whose scheme is `https` (in
    /// any case) means a proxy in front does. Either makes the cookie `Secure` and `__Host-`.
    pub fn new(
        db: Db,
        customers: Customers,
        settings: &SessionSettings,
        public_url: &str,
        tls: bool,
    ) -> anyhow::Result<Self> {
        let secret = if settings.session_secret.is_empty() {
            random_base62(43).into_bytes()
        } else {
            settings.session_secret.clone().into_bytes()
        };
        let keyed = HmacSha256::new_from_slice(&secret)
            .map_err(|e| anyhow::anyhow!("dashboard.session_secret: {e}"))?;
        let public_url =
            url::Url::parse(public_url).map_err(|e| anyhow::anyhow!("server.public_url: {e}"))?;
        // The parser lower-cases the scheme: `HTTPS://` is HTTPS too.
        let secure = tls || public_url.scheme() == "https";
        let origin = public_url.origin().ascii_serialization();
        Ok(Self {
            keyed,
            customers,
            db,
            ttl: Duration::from_secs(settings.session_ttl_secs),
            secure,
            cookie_name: if secure {
                SECURE_COOKIE_NAME
            } else {
                COOKIE_NAME
            },
            origin,
        })
    }

    fn mac(&self, domain: &[u8], text: &str) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(domain);
        mac.update(text.as_bytes());
        mac
    }

    /// The cookie value for a customer signed in with key `key_id`, valid until `now + ttl`.
    fn issue(&self, customer: CustomerId, key_id: &str, now: i64) -> String {
        let expires_at = now.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX));
        let nonce = random_base62(NONCE_LEN);
        let payload = format!("{VERSION}.{customer}.{key_id}.{expires_at}.{nonce}");
        let tag = self.mac(b"session\0", &payload).finalize().into_bytes();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The claims of a genuine, unexpired cookie value.
    fn verify(&self, value: &str, now: i64) -> Option<Claims> {
        if value.len() > MAX_COOKIE_LEN {
            return None;
        }
        let (payload, tag) = value.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(b"session\0", payload).verify_slice(&tag).ok()?;
        let mut parts = payload.split('.');
        let (Some(VERSION), Some(customer), Some(key_id), Some(expires_at), Some(_nonce), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let claims = Claims {
            customer: CustomerId(customer.parse().ok()?),
            key_id: key_id.to_owned(),
            expires_at: expires_at.parse().ok()?,
        };
        (claims.expires_at > now && is_base62(&claims.key_id)).then_some(claims)
    }

    fn csrf_for(&self, cookie: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(b"csrf\0", cookie).finalize().into_bytes())
    }

    /// Checks an API key; on success, records a new session and returns its cookie value.
    pub async fn sign_in(&self, key: &str) -> Result<(Customer, String), AuthError> {
        let customer = self.customers.authenticate(key).await?;
        let now = now_secs();
        let value = self.issue(customer.id, &customer.key_id, now);
        let expires_at_ms = now
            .saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX))
            .saturating_mul(1000);
        let (id_hash, owner) = (sha256_hex(value.as_bytes()), customer.id.0);
        self.db
            .run(move |conn| {
                // Expired sessions go as new ones come, so the table holds live ones only.
                diesel::delete(sessions::table.filter(sessions::expires_at.le(now_ms())))
                    .execute(conn)?;
                diesel::insert_into(sessions::table)
                    .values((
                        sessions::id_hash.eq(&id_hash),
                        sessions::customer_id.eq(owner),
                        sessions::expires_at.eq(expires_at_ms),
                    ))
                    .execute(conn)?;
                Ok::<_, DbError>(())
            })
            .await?;
        Ok((customer, value))
    }

    /// Ends a session on every instance: its cookie opens nothing from now on.
    pub async fn sign_out(&self, session: &Session) -> Result<(), DbError> {
        let id_hash = session.id_hash.clone();
        self.db
            .run(move |conn| {
                diesel::delete(sessions::table.filter(sessions::id_hash.eq(&id_hash)))
                    .execute(conn)?;
                Ok(())
            })
            .await
    }

    /// The request's session: `Ok(None)` when there is no cookie, or it is forged, expired,
    /// signed out, or its key has been revoked since.
    pub async fn current(&self, req: &HttpRequest) -> Result<Option<Session>, DbError> {
        let Some(value) = cookie_value(req, self.cookie_name) else {
            return Ok(None);
        };
        let Some(claims) = self.verify(&value, now_secs()) else {
            return Ok(None);
        };
        let (customer, key_id) = (claims.customer, claims.key_id.clone());
        let id_hash = sha256_hex(value.as_bytes());
        let lookup = id_hash.clone();
        let found: Option<(String, String)> = self
            .db
            .run(move |conn| {
                sessions::table
                    .inner_join(customers::table.inner_join(api_keys::table))
                    .filter(sessions::id_hash.eq(&lookup))
                    .filter(sessions::expires_at.gt(now_ms()))
                    .filter(customers::id.eq(customer.0))
                    .filter(customers::revoked_at.is_null())
                    .filter(api_keys::key_id.eq(&key_id))
                    .filter(api_keys::revoked_at.is_null())
                    .select((customers::name, api_keys::scope))
                    .first(conn)
                    .optional()
                    .map_err(DbError::from)
            })
            .await?;
        Ok(found.map(|(name, scope)| Session {
            customer: Customer {
                id: customer,
                name,
                key_id: claims.key_id.clone(),
                // Anything but a write key is read-only.
                scope: Scope::parse(&scope).unwrap_or(Scope::Read),
            },
            key_id: claims.key_id,
            expires_at: claims.expires_at,
            csrf: self.csrf_for(&value),
            id_hash,
        }))
    }

    /// A token that lets whoever holds it see one advert's preview page, for as long as a
    /// session lasts: `{customer}.{key_id}.{expiry}` and an HMAC-SHA256 of the advert id with
    /// them, under the session secret (in its own domain, so it is neither a cookie nor a CSRF
    /// token). It is handed to the customer who just submitted the advert with the key `key_id`,
    /// who needs no account session.
    pub fn preview_token(&self, advert: AdvertId, customer: CustomerId, key_id: &str) -> String {
        self.preview_token_at(advert, customer, key_id, now_secs())
    }

    fn preview_token_at(
        &self,
        advert: AdvertId,
        customer: CustomerId,
        key_id: &str,
        now: i64,
    ) -> String {
        let expires_at = now.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX));
        let payload = format!("{customer}.{key_id}.{expires_at}");
        let tag = self
            .mac(b"preview\0", &format!("{advert}.{payload}"))
            .finalize()
            .into_bytes();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The customer a genuine, unexpired preview token for `advert` was issued to, while the
    /// key it was issued under is not revoked.
    pub async fn preview_owner(
        &self,
        advert: AdvertId,
        token: &str,
    ) -> Result<Option<CustomerId>, DbError> {
        let Some((owner, key_id)) = self.preview_owner_at(advert, token, now_secs()) else {
            return Ok(None);
        };
        let live: Option<i64> = self
            .db
            .run(move |conn| {
                customers::table
                    .inner_join(api_keys::table)
                    .filter(customers::id.eq(owner.0))
                    .filter(customers::revoked_at.is_null())
                    .filter(api_keys::key_id.eq(&key_id))
                    .filter(api_keys::revoked_at.is_null())
                    .select(customers::id)
                    .first(conn)
                    .optional()
                    .map_err(DbError::from)
            })
            .await?;
        Ok(live.map(CustomerId))
    }

    fn preview_owner_at(
        &self,
        advert: AdvertId,
        token: &str,
        now: i64,
    ) -> Option<(CustomerId, String)> {
        if token.len() > MAX_COOKIE_LEN {
            return None;
        }
        let (payload, tag) = token.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(b"preview\0", &format!("{advert}.{payload}"))
            .verify_slice(&tag)
            .ok()?;
        let mut parts = payload.split('.');
        let (Some(customer), Some(key_id), Some(expires_at), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let expires_at: i64 = expires_at.parse().ok()?;
        (expires_at > now && is_base62(key_id))
            .then_some((CustomerId(customer.parse().ok()?), key_id.to_owned()))
    }

    /// Whether `presented` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, session: &Session, presented: &str) -> bool {
        !presented.is_empty() && bool::from(session.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// A POST may change state only when its `Origin` (if the browser sent one) is ours and the
    /// browser does not call it cross-site.
    pub fn origin_allowed(&self, req: &HttpRequest) -> bool {
        let headers = req.headers();
        let origin_ok = headers
            .get_all(header::ORIGIN)
            .all(|o| o.to_str().is_ok_and(|o| o == self.origin));
        let site_ok = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|site| site != "cross-site");
        origin_ok && site_ok
    }

    /// `Set-Cookie` for a new session.
    pub fn set_cookie(&self, value: &str) -> String {
        self.cookie(value, self.ttl.as_secs())
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_cookie(&self) -> String {
        self.cookie("", 0)
    }

    /// Whether the request presented a session cookie at all (to clear a stale one).
    pub fn has_cookie(req: &HttpRequest) -> bool {
        cookie_value(req, COOKIE_NAME).is_some() || cookie_value(req, SECURE_COOKIE_NAME).is_some()
    }

    /// The cookie's name here: `__Host-` prefixed when it is `Secure`.
    pub fn cookie_name(&self) -> &'static str {
        self.cookie_name
    }

    fn cookie(&self, value: &str, max_age: u64) -> String {
        let (name, secure) = if self.secure {
            (SECURE_COOKIE_NAME, "; Secure")
        } else {
            (COOKIE_NAME, "")
        };
        // No Domain attribute: the cookie goes back to this host only.
        format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
    }
}

/// The value of the named cookie in the request's `Cookie` headers.
fn cookie_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sessions(secret: &str, secure: bool) -> (tempfile::TempDir, Sessions) {
        let (dir, db) = Db::temporary();
        let settings = SessionSettings {
            session_secret: secret.to_owned(),
            session_ttl_secs: 3600,
        };
        let s = Sessions::new(
            db.clone(),
            Customers::new(db),
            &settings,
            "https://ads.example.com:8443/base",
            secure,
        )
        .unwrap();
        (dir, s)
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_cookie_round_trips_and_carries_no_secret() {
        let (_dir, s) = sessions(SECRET, false);
        let value = s.issue(CustomerId(7), "AbCdEf123456", 1_000);
        assert!(value.starts_with("v1.7.AbCdEf123456.4600."), "{value}");
        assert_eq!(
            s.verify(&value, 1_001),
            Some(Claims {
                customer: CustomerId(7),
                key_id: "AbCdEf123456".into(),
                expires_at: 4_600
            })
        );
        // Expired.
        assert_eq!(s.verify(&value, 4_600), None);
    }

    #[test]
    fn tampered_or_foreign_cookies_are_refused() {
        let (_dir, s) = sessions(SECRET, false);
        let value = s.issue(CustomerId(7), "AbCdEf123456", 1_000);
        assert_ne!(value, s.issue(CustomerId(7), "AbCdEf123456", 1_000));
        let other_customer = value.replacen("v1.7.", "v1.8.", 1);
        assert_eq!(s.verify(&other_customer, 1_001), None);
        let later = value.replacen(".4600.", ".9999.", 1);
        assert_eq!(s.verify(&later, 1_001), None);
        assert_eq!(s.verify("v1.7.AbCdEf123456.4600", 1_001), None);
        assert_eq!(s.verify("", 1_001), None);
        let (_dir2, other) = sessions(&SECRET.replace('0', "x"), false);
        assert_eq!(other.verify(&value, 1_001), None);
    }

    #[test]
    fn csrf_tokens_differ_per_session() {
        let (_dir, s) = sessions(SECRET, false);
        let a = s.issue(CustomerId(1), "AAAAAAAAAAAA", 1_000);
        let b = s.issue(CustomerId(1), "AAAAAAAAAAAA", 1_001);
        assert_ne!(s.csrf_for(&a), s.csrf_for(&b));
        assert_eq!(s.csrf_for(&a), s.csrf_for(&a));
    }

    #[test]
    fn cookie_attributes_follow_tls() {
        // Plain HTTP everywhere: no TLS here and an http:// public URL.
        let (dir, db) = Db::temporary();
        let settings = SessionSettings {
            session_secret: SECRET.to_owned(),
            session_ttl_secs: 3600,
        };
        let plain = Sessions::new(
            db.clone(),
            Customers::new(db),
            &settings,
            "http://ads.example.com:8080/base",
            false,
        )
        .unwrap();
        let set = plain.set_cookie("v");
        drop(dir);
        assert_eq!(
            set,
            "reklama_session=v; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"
        );
        let (_dir2, tls) = sessions(SECRET, true);
        assert!(tls.set_cookie("v").ends_with("; Secure"));
        assert!(tls.clear_cookie().contains("Max-Age=0"));
        assert!(
            tls.set_cookie("v")
                .starts_with("__Host-reklama_session=v; Path=/;")
        );
        assert!(!tls.set_cookie("v").contains("Domain"));
    }

    #[test]
    fn secure_follows_the_parsed_scheme_of_the_public_url() {
        let (dir, db) = Db::temporary();
        let settings = SessionSettings {
            session_secret: SECRET.to_owned(),
            session_ttl_secs: 3600,
        };
        let at = |url: &str| {
            Sessions::new(
                db.clone(),
                Customers::new(db.clone()),
                &settings,
                url,
                false,
            )
            .unwrap()
        };
        for url in [
            "HTTPS://ads.example.com",
            "https://ads.example.com",
            "HttpS://a.example",
        ] {
            let s = at(url);
            assert_eq!(s.cookie_name(), SECURE_COOKIE_NAME, "{url}");
            assert!(s.set_cookie("v").ends_with("; Secure"), "{url}");
        }
        for url in ["http://ads.example.com", "HTTP://ads.example.com"] {
            let s = at(url);
            assert_eq!(s.cookie_name(), COOKIE_NAME, "{url}");
            assert!(!s.set_cookie("v").contains("Secure"), "{url}");
        }
        drop(dir);
    }

    #[test]
    fn origin_is_the_public_urls() {
        let (_dir, s) = sessions(SECRET, false);
        assert_eq!(s.origin, "https://ads.example.com:8443");
        let req = |origin: Option<&str>| {
            let mut r = actix_web::test::TestRequest::post();
            if let Some(o) = origin {
                r = r.insert_header((header::ORIGIN, o));
            }
            r.to_http_request()
        };
        assert!(s.origin_allowed(&req(None)));
        assert!(s.origin_allowed(&req(Some("https://ads.example.com:8443"))));
        assert!(!s.origin_allowed(&req(Some("https://evil.example"))));
        assert!(!s.origin_allowed(&req(Some("null"))));
    }

    #[test]
    fn a_preview_token_opens_its_own_advert_only_until_it_expires() {
        let (_dir, s) = sessions(&"s".repeat(32), false);
        let now = 1_800_000_000;
        let token = s.preview_token_at(AdvertId(7), CustomerId(3), "AbCdEf123456", now);
        assert_eq!(
            s.preview_owner_at(AdvertId(7), &token, now + 60),
            Some((CustomerId(3), "AbCdEf123456".to_owned()))
        );
        assert_eq!(s.preview_owner_at(AdvertId(8), &token, now + 60), None);
        let ttl = i64::try_from(s.ttl.as_secs()).unwrap();
        assert_eq!(s.preview_owner_at(AdvertId(7), &token, now + ttl), None);
        // Another customer id in the payload breaks the MAC.
        let forged = token.replacen("3.", "4.", 1);
        assert_eq!(s.preview_owner_at(AdvertId(7), &forged, now), None);
        // So does another key id.
        let other_key = token.replacen("AbCdEf123456", "AbCdEf123457", 1);
        assert_eq!(s.preview_owner_at(AdvertId(7), &other_key, now), None);
        assert_eq!(s.preview_owner_at(AdvertId(7), "", now), None);
        // Another secret, another token.
        let (_dir2, other) = sessions(&"t".repeat(32), false);
        assert_eq!(other.preview_owner_at(AdvertId(7), &token, now), None);
        // A session cookie is not a preview token.
        let cookie = s.issue(CustomerId(3), "abc", now);
        assert_eq!(s.preview_owner_at(AdvertId(7), &cookie, now), None);
    }
}
