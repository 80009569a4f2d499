//! Customer accounts and their API keys. A key is shown once; only its SHA-256 is stored, looked
//! up by a public key id and compared in constant time. Handlers take `Customer` as an extractor.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, web};
use diesel::prelude::*;
use subtle::ConstantTimeEq;

use crate::domain::CustomerId;
use crate::platform::db::schema::{customers, sessions};
use crate::platform::db::{Db, DbError, now_ms};
use crate::platform::http::HttpError;
use crate::platform::limits::{KeyBudget, rate_limited};
use crate::platform::tokens::{is_base62, random_base62, sha256_hex};

const KEY_PREFIX: &str = "rk_";
const KEY_ID_LEN: usize = 12;
/// 32 base62 characters: about 190 bits of secret.
const KEY_SECRET_LEN: usize = 32;

/// An authenticated customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: CustomerId,
    pub name: String,
}

/// A freshly created key, the only moment its secret exists outside the customer's hands.
#[derive(Debug)]
pub struct IssuedKey {
    pub customer: Customer,
    pub key: String,
}

struct ParsedKey<'a> {
    key_id: &'a str,
}

fn parse_key(key: &str) -> Option<ParsedKey<'_>> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    (key_id.len() == KEY_ID_LEN
        && secret.len() == KEY_SECRET_LEN
        && is_base62(key_id)
        && is_base62(secret))
    .then_some(ParsedKey { key_id })
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing, malformed, unknown or revoked API key")]
    Rejected,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<AuthError> for HttpError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Rejected => HttpError::unauthorized(
                "a valid API key is required: send Authorization: Bearer rk_...",
            ),
            AuthError::Db(DbError::Unavailable(_)) => HttpError::unavailable(),
            AuthError::Db(other) => crate::platform::http::log_internal(&other),
        }
    }
}

/// Customer accounts, backed by the database.
#[derive(Clone)]
pub struct Customers {
    db: Db,
}

impl Customers {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Creates a customer with a new key.
    pub async fn create(&self, name: &str) -> Result<IssuedKey, DbError> {
        let name = name.trim().to_owned();
        self.db
            .run(move |conn| {
                let key_id = random_base62(KEY_ID_LEN);
                let key = format!("{KEY_PREFIX}{key_id}_{}", random_base62(KEY_SECRET_LEN));
                let id: i64 = diesel::insert_into(customers::table)
                    .values((
                        customers::name.eq(&name),
                        customers::key_id.eq(&key_id),
                        customers::key_hash.eq(sha256_hex(key.as_bytes())),
                        customers::created_at.eq(now_ms()),
                    ))
                    .returning(customers::id)
                    .get_result(conn)?;
                Ok(IssuedKey {
                    customer: Customer {
                        id: CustomerId(id),
                        name,
                    },
                    key,
                })
            })
            .await
    }

    /// Revokes every key of the customer with this name or numeric id; returns how many were.
    pub async fn revoke(&self, who: &str) -> Result<usize, DbError> {
        let who = who.trim().to_owned();
        self.db
            .run(move |conn| {
                let now = now_ms();
                let active = customers::revoked_at.is_null();
                let n = match who.parse::<i64>() {
                    Ok(id) => {
                        diesel::update(customers::table.filter(customers::id.eq(id).and(active)))
                            .set(customers::revoked_at.eq(now))
                            .execute(conn)?
                    }
                    Err(_) => diesel::update(
                        customers::table.filter(customers::name.eq(&who).and(active)),
                    )
                    .set(customers::revoked_at.eq(now))
                    .execute(conn)?,
                };
                // Their dashboard sessions end with them, on every instance.
                let revoked = customers::table
                    .filter(customers::revoked_at.is_not_null())
                    .select(customers::id);
                diesel::delete(sessions::table.filter(sessions::customer_id.eq_any(revoked)))
                    .execute(conn)?;
                Ok(n)
            })
            .await
    }

    /// Resolves a presented key to its customer.
    pub async fn authenticate(&self, key: &str) -> Result<Customer, AuthError> {
        let key = key.trim();
        let Some(parsed) = parse_key(key) else {
            return Err(AuthError::Rejected);
        };
        let key_id = parsed.key_id.to_owned();
        let presented = sha256_hex(key.as_bytes());
        let row: Option<(i64, String, String, Option<i64>)> = self
            .db
            .run(move |conn| {
                customers::table
                    .filter(customers::key_id.eq(&key_id))
                    .select((
                        customers::id,
                        customers::name,
                        customers::key_hash,
                        customers::revoked_at,
                    ))
                    .first(conn)
                    .optional()
                    .map_err(DbError::from)
            })
            .await?;
        match row {
            Some((id, name, stored, None))
                if bool::from(stored.as_bytes().ct_eq(presented.as_bytes())) =>
            {
                Ok(Customer {
                    id: CustomerId(id),
                    name,
                })
            }
            _ => Err(AuthError::Rejected),
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequest for Customer {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let customers = req.app_data::<web::Data<Customers>>().cloned();
        let token = bearer_token(req).map(str::to_owned);
        // Set by the rate limiter on limited routes: the key's budget is drawn only once the
        // key is known to be genuine, so nobody can spend another customer's budget.
        let budget = req.extensions().get::<KeyBudget>().cloned();
        Box::pin(async move {
            let customers = customers.ok_or_else(HttpError::internal)?;
            let token = token.ok_or(AuthError::Rejected)?;
            let customer = customers.authenticate(&token).await?;
            if let Some(budget) = budget {
                budget.charge(&token).map_err(rate_limited)?;
            }
            Ok(customer)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shape_is_checked_before_any_lookup() {
        let good = format!("rk_{}_{}", "a".repeat(12), "B".repeat(32));
        assert!(parse_key(&good).is_some());
        assert!(parse_key("rk_short_secret").is_none());
        assert!(parse_key(&format!("xx_{}_{}", "a".repeat(12), "B".repeat(32))).is_none());
        assert!(parse_key(&format!("rk_{}_{}", "a".repeat(12), "B-".repeat(16))).is_none());
    }
}
